//! `latchkey bench`: throughput and latency figures for docs/performance.md.

use std::path::Path;

use clap::Args;

#[derive(Args, Debug)]
pub struct BenchArgs {}

pub async fn run(_data: &Path, _database_url: Option<&str>, _args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
