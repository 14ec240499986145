//! Wires runner loops, the executor, the coordinator client and the lifecycle together.

/// Runs the manager until shutdown.
pub async fn run() -> anyhow::Result<()> {
    Ok(())
}
