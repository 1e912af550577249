//! TEMPORARY placeholder until the PKCS#12 decoder lands (being written in parallel).
#![allow(dead_code)]
pub struct Pfx {
    pub certs: Vec<PfxCert>,
    pub keys: Vec<PfxKey>,
    pub protection: String,
}
pub struct PfxCert {
    pub der: Vec<u8>,
    pub friendly_name: Option<String>,
    pub local_key_id: Option<Vec<u8>>,
}
pub struct PfxKey {
    pub pkcs8_der: Vec<u8>,
    pub friendly_name: Option<String>,
    pub local_key_id: Option<Vec<u8>>,
    pub csp_name: Option<String>,
}
#[derive(Debug, thiserror::Error)]
pub enum PfxError {
    #[error("wrong password for this PFX file")]
    WrongPassword,
    #[error("not a valid PKCS#12 (PFX) file: {0}")]
    Malformed(String),
    #[error("unsupported PKCS#12 protection: {0}")]
    Unsupported(String),
}
pub fn decode(_der: &[u8], _password: Option<&str>) -> Result<Pfx, PfxError> {
    Err(PfxError::Unsupported("not yet".into()))
}
pub fn looks_like_pfx(der: &[u8]) -> bool {
    der.first() == Some(&0x30)
}
