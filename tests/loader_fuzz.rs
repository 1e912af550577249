//! Hostile input for the certificate checker: random and mutated bytes (truncations, bit flips,
//! insertions, deletions) of the good fixtures go through `check_bytes`, which must answer
//! `Ok` or `Err` and never panic. Deterministic (xorshift with fixed seeds), a few thousand
//! runs in all; a failure names the seed and iteration that reproduce it.
//!
//! Besides raw mutations, two structure-aware variants reach past the outer checks: the DER
//! inside a PEM block is mutated and re-encoded, and a PFX's authenticated safe is mutated and
//! its MAC recomputed, so the decoder's inner parsing sees the damage instead of a MAC failure.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

use base64::Engine as _;
use gatehouse::cert::{LoadError, Options, PfxError, check_bytes, read_roots};
use hmac::Mac as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

const CERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/certs/");

fn fixture(file: &str) -> Vec<u8> {
    std::fs::read(Path::new(CERTS).join(file)).unwrap()
}

/// xorshift64*, seeded through splitmix64 so neighbouring seeds give unrelated streams.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, iteration: u64) -> Rng {
        let mut z = seed ^ iteration.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[7]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
}

/// Bytes that mean something to a DER, BER or PEM reader.
const INTERESTING: [u8; 12] = [0x00, 0x01, 0x02, 0x04, 0x30, 0x31, 0x7f, 0x80, 0x81, 0x84, 0xff, b'-'];

/// Applies one to three random mutations; returns a description of what was done.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) -> String {
    let mut done = Vec::new();
    for _ in 0..=rng.below(3) {
        let len = bytes.len();
        let at = if len == 0 { 0 } else { rng.below(len) };
        match rng.below(7) {
            0 => {
                bytes.truncate(at);
                done.push(format!("truncate to {at}"));
            }
            1 if len > 0 => {
                for _ in 0..=rng.below(8) {
                    let at = rng.below(len);
                    let bit = rng.below(8);
                    bytes[at] ^= 1 << bit;
                    done.push(format!("flip bit {bit} at {at}"));
                }
            }
            2 => {
                let n = 1 + rng.below(16);
                let new = rng.bytes(n);
                bytes.splice(at..at, new);
                done.push(format!("insert {n} random bytes at {at}"));
            }
            3 if len > 0 => {
                let n = 1 + rng.below(len.clamp(1, 64));
                let end = (at + n).min(len);
                bytes.drain(at..end);
                done.push(format!("delete {at}..{end}"));
            }
            4 if len > 0 => {
                let value = INTERESTING[rng.below(INTERESTING.len())];
                bytes[at] = value;
                done.push(format!("set byte {at} to {value:#04x}"));
            }
            5 if len > 0 => {
                let n = 1 + rng.below(len.min(256));
                let end = (at + n).min(len);
                let chunk = bytes[at..end].to_vec();
                let to = rng.below(len + 1);
                bytes.splice(to..to, chunk);
                done.push(format!("copy {at}..{end} to {to}"));
            }
            _ => {
                let value = INTERESTING[rng.below(INTERESTING.len())];
                bytes.insert(at, value);
                done.push(format!("insert {value:#04x} at {at}"));
            }
        }
    }
    done.join(", ")
}

/// What one call to the checker did.
enum Outcome {
    Ok,
    Err(LoadError),
    Panicked(String),
}

fn run(bytes: &[u8], options: &Options) -> Outcome {
    match catch_unwind(AssertUnwindSafe(|| check_bytes(bytes, options))) {
        Ok(Ok(_)) => Outcome::Ok,
        Ok(Err(e)) => Outcome::Err(e),
        Err(payload) => Outcome::Panicked(
            payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string panic payload)".to_owned()),
        ),
    }
}

/// Collects panics across a fuzz run and fails the test with every one of them at the end.
#[derive(Default)]
struct Panics(Vec<String>);

impl Panics {
    fn record(&mut self, what: &str, seed: u64, iteration: u64, how: &str, message: &str) {
        self.0.push(format!("{what}: seed {seed:#x}, iteration {iteration} ({how}): panicked: {message}"));
    }

    fn assert_none(&self) {
        assert!(self.0.is_empty(), "{} inputs made the checker panic:\n{}", self.0.len(), self.0.join("\n"));
    }
}

fn options(password: Option<&str>) -> Options {
    Options {
        password: password.map(str::to_owned),
        extra_roots: read_roots(&Path::new(CERTS).join("ca.pem")).unwrap(),
        public_roots: false,
        host: Some("node1.gatehouse.test".to_owned()),
        at: None,
    }
}

#[track_caller]
fn assert_clean_input_is_ok(what: &str, bytes: &[u8], options: &Options) {
    match run(bytes, options) {
        Outcome::Ok => {}
        Outcome::Err(e) => panic!("{what}: the unmutated input must load, got: {e}"),
        Outcome::Panicked(message) => panic!("{what}: the unmutated input panicked: {message}"),
    }
}

/// The six inputs of the raw-mutation run, with the password that opens each.
const INPUTS: [(&str, Option<&str>, u64); 6] = [
    ("good.pem", None, 0x6f6f_6470_656d_0001),
    ("good.der", None, 0x6f6f_6464_6572_0002),
    ("good.pfx", Some("secret"), 0x6f6f_6470_6678_0003),
    ("good-legacy.pfx", Some("secret"), 0x6567_6163_7966_0004),
    ("ec-p256.pem", None, 0x6563_3235_3670_0005),
    ("ed25519.pem", None, 0x6564_3235_3531_0006),
];

#[test]
fn mutated_fixtures_never_panic_the_checker() {
    const ITERATIONS: u64 = 400;
    let mut panics = Panics::default();
    for (file, password, seed) in INPUTS {
        let good = fixture(file);
        let with_password = options(password);
        assert_clean_input_is_ok(file, &good, &with_password);
        let without_password = Options { password: None, ..with_password.clone() };
        let mut errors = 0;
        for iteration in 0..ITERATIONS {
            let mut rng = Rng::new(seed, iteration);
            let mut bytes = good.clone();
            let how = mutate(&mut rng, &mut bytes);
            // Every fourth run without the password, so a PFX's no-password path sees damage too.
            let options = if iteration % 4 == 3 { &without_password } else { &with_password };
            match run(&bytes, options) {
                Outcome::Ok => {}
                Outcome::Err(_) => errors += 1,
                Outcome::Panicked(message) => panics.record(file, seed, iteration, &how, &message),
            }
        }
        assert!(errors > 0, "{file}: no mutation was ever refused; the mutator isn't mutating");
    }
    panics.assert_none();
}

#[test]
fn random_bytes_never_panic_the_checker() {
    const SEED: u64 = 0x7261_6e64_6f6d_0001;
    let prefixes: [&[u8]; 6] = [
        b"",
        b"-----BEGIN CERTIFICATE-----\n",
        &[0x30, 0x82, 0x03, 0x00, 0x30, 0x82, 0x02, 0x00, 0xa0, 0x03, 0x02, 0x01, 0x02],
        &[0x30, 0x82, 0x0a, 0x00, 0x02, 0x01, 0x03, 0x30, 0x82],
        &[0x30, 0x80, 0x02, 0x01, 0x03, 0x30, 0x80],
        b"-----BEGIN PRIVATE KEY-----\n",
    ];
    let options = options(Some("secret"));
    let mut panics = Panics::default();
    for iteration in 0..600 {
        let mut rng = Rng::new(SEED, iteration);
        let prefix = prefixes[rng.below(prefixes.len())];
        let len = rng.below(1500);
        let mut bytes = prefix.to_vec();
        if prefix.starts_with(b"-----") {
            // Random base64 text with an END line, so the DER reader underneath gets random input.
            let body: Vec<u8> = rng.bytes(len);
            let text = base64::engine::general_purpose::STANDARD.encode(body);
            let label = if prefix.contains(&b'K') { "PRIVATE KEY" } else { "CERTIFICATE" };
            bytes.extend(format!("{text}\n-----END {label}-----\n").into_bytes());
        } else {
            bytes.extend(rng.bytes(len));
        }
        if let Outcome::Panicked(message) = run(&bytes, &options) {
            panics.record("random bytes", SEED, iteration, prefix_name(prefix), &message);
        }
    }
    panics.assert_none();
}

fn prefix_name(prefix: &[u8]) -> &'static str {
    match prefix.first() {
        None => "no prefix",
        Some(b'-') => "PEM armour",
        Some(_) if prefix.contains(&0x03) && prefix.get(4) == Some(&0x02) => "PFX header",
        Some(_) => "DER header",
    }
}

/// A PEM file split into its blocks: (label, DER).
fn pem_blocks(text: &str) -> Vec<(String, Vec<u8>)> {
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(label) = line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let body: String = lines.by_ref().take_while(|l| *l != end).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(body).unwrap();
        blocks.push((label.to_owned(), der));
    }
    blocks
}

fn pem(blocks: &[(String, Vec<u8>)]) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (label, der) in blocks {
        writeln!(out, "-----BEGIN {label}-----").unwrap();
        let text = base64::engine::general_purpose::STANDARD.encode(der);
        for line in text.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap());
            out.push('\n');
        }
        writeln!(out, "-----END {label}-----").unwrap();
    }
    out.into_bytes()
}

#[test]
fn mutated_der_inside_pem_blocks_never_panics_the_checker() {
    const ITERATIONS: u64 = 250;
    let inputs = [
        ("good.pem", None, 0x7065_6d64_6572_0001),
        ("good-pkcs1.pem", None, 0x7065_6d64_6572_0002),
        ("good-encrypted.pem", Some("secret"), 0x7065_6d64_6572_0003),
        ("ec-p256.pem", None, 0x7065_6d64_6572_0004),
        ("ec-p384.pem", None, 0x7065_6d64_6572_0005),
        ("ed25519.pem", None, 0x7065_6d64_6572_0006),
    ];
    let mut panics = Panics::default();
    for (file, password, seed) in inputs {
        let blocks = pem_blocks(&String::from_utf8(fixture(file)).unwrap());
        assert!(blocks.len() >= 3, "{file}: expected leaf, intermediate and key");
        let options = options(password);
        assert_clean_input_is_ok(file, &pem(&blocks), &options);
        let (mut oks, mut errors) = (0, 0);
        for iteration in 0..ITERATIONS {
            let mut rng = Rng::new(seed, iteration);
            let mut blocks = blocks.clone();
            let which = rng.below(blocks.len());
            let mutation = mutate(&mut rng, &mut blocks[which].1);
            let how = format!("block {which} ({}): {mutation}", blocks[which].0);
            match run(&pem(&blocks), &options) {
                Outcome::Ok => oks += 1,
                Outcome::Err(_) => errors += 1,
                Outcome::Panicked(message) => panics.record(file, seed, iteration, &how, &message),
            }
        }
        // Both must happen, or the mutations never reached the rules or never broke anything.
        assert!(oks > 0 && errors > 0, "{file}: {oks} loaded, {errors} refused");
    }
    panics.assert_none();
}

#[test]
fn any_mix_of_pem_blocks_loads_exactly_when_it_has_a_certificate() {
    const SEED: u64 = 0x6d69_7865_645f_0001;
    let files = [
        "good.pem",
        "good-pkcs1.pem",
        "good-encrypted.pem",
        "ec-p256.pem",
        "ec-p384.pem",
        "ec-p521.pem",
        "ec-secp256k1.pem",
        "ed25519.pem",
        "ed448.pem",
        "rsa1024.pem",
        "v1.pem",
        "self-signed.pem",
        "bad-wildcard.pem",
        "multi-san.pem",
    ];
    let pool: Vec<(String, Vec<u8>)> =
        files.iter().flat_map(|f| pem_blocks(&String::from_utf8(fixture(f)).unwrap())).collect();
    let options = options(Some("secret"));
    let mut panics = Panics::default();
    let mut wrong = Vec::new();
    for iteration in 0..400 {
        let mut rng = Rng::new(SEED, iteration);
        let blocks: Vec<(String, Vec<u8>)> =
            (0..=rng.below(5)).map(|_| pool[rng.below(pool.len())].clone()).collect();
        let labels: Vec<&str> = blocks.iter().map(|(l, _)| l.as_str()).collect();
        let has_certificate = labels.contains(&"CERTIFICATE");
        match run(&pem(&blocks), &options) {
            Outcome::Ok if has_certificate => {}
            Outcome::Err(_) if !has_certificate => {}
            Outcome::Ok => {
                wrong.push(format!("iteration {iteration} {labels:?}: loaded without a certificate"));
            }
            Outcome::Err(e) => wrong.push(format!("iteration {iteration} {labels:?}: refused: {e}")),
            Outcome::Panicked(message) => {
                panics.record("block mix", SEED, iteration, &labels.join(", "), &message);
            }
        }
    }
    panics.assert_none();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Re-MACs a PFX after mutating its authenticated safe, so the damage gets past the MAC check.
fn remac(pfx: &[u8], password: &str, rng: Option<&mut Rng>) -> (Vec<u8>, String) {
    use der::{Decode as _, Encode as _};
    let mut pfx = pkcs12::pfx::Pfx::from_der(pfx).unwrap();
    let mut auth_safe = pfx.auth_safe.content.decode_as::<der::asn1::OctetString>().unwrap().into_bytes();
    let how = rng.map_or_else(|| "unmutated".to_owned(), |rng| mutate(rng, &mut auth_safe));
    let mac = pfx.mac_data.as_mut().unwrap();
    let (salt, rounds) = (mac.mac_salt.as_bytes().to_vec(), mac.iterations);
    let tag = match mac.mac.algorithm.oid.to_string().as_str() {
        "1.3.14.3.2.26" => {
            let key = pkcs12::kdf::derive_key_utf8::<sha1::Sha1>(
                password,
                &salt,
                pkcs12::kdf::Pkcs12KeyType::Mac,
                rounds,
                20,
            )
            .unwrap();
            let mut hmac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&key).unwrap();
            hmac.update(&auth_safe);
            hmac.finalize().into_bytes().to_vec()
        }
        "2.16.840.1.101.3.4.2.1" => {
            let key = pkcs12::kdf::derive_key_utf8::<sha2::Sha256>(
                password,
                &salt,
                pkcs12::kdf::Pkcs12KeyType::Mac,
                rounds,
                32,
            )
            .unwrap();
            let mut hmac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
            hmac.update(&auth_safe);
            hmac.finalize().into_bytes().to_vec()
        }
        other => panic!("unexpected MAC digest {other}"),
    };
    mac.mac.digest = der::asn1::OctetString::new(tag).unwrap();
    pfx.auth_safe.content = der::Any::encode_from(&der::asn1::OctetString::new(auth_safe).unwrap()).unwrap();
    (pfx.to_der().unwrap(), how)
}

#[test]
fn mutated_pfx_contents_under_a_valid_mac_never_panic_the_checker() {
    const ITERATIONS: u64 = 250;
    let inputs = [
        ("good.pfx", 0x7066_786d_6163_0001),
        ("good-legacy.pfx", 0x7066_786d_6163_0002),
        ("cng-software.pfx", 0x7066_786d_6163_0003),
    ];
    let options = options(Some("secret"));
    let mut panics = Panics::default();
    for (file, seed) in inputs {
        let good = fixture(file);
        let (clean, _) = remac(&good, "secret", None);
        assert_clean_input_is_ok(&format!("{file} re-MACed"), &clean, &options);
        let mut past_the_mac = 0;
        for iteration in 0..ITERATIONS {
            let mut rng = Rng::new(seed, iteration);
            let (bytes, how) = remac(&good, "secret", Some(&mut rng));
            match run(&bytes, &options) {
                Outcome::Ok
                | Outcome::Err(LoadError::Pfx(PfxError::Malformed(_) | PfxError::Unsupported(_))) => {
                    past_the_mac += 1;
                }
                Outcome::Err(_) => {}
                Outcome::Panicked(message) => panics.record(file, seed, iteration, &how, &message),
            }
        }
        // The MAC was recomputed, so nearly every run must get past it into the contents.
        assert!(past_the_mac * 2 > ITERATIONS, "{file}: only {past_the_mac} runs got past the MAC");
    }
    panics.assert_none();
}
