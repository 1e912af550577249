//! The Configuration Manager window (eframe/egui).
pub fn run() -> anyhow::Result<()> {
    anyhow::bail!("gui not yet")
}
