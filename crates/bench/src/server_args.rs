//! The command line both benchmark servers take: `--addr HOST:PORT [--threads N]`.

/// A benchmark server's address and tokio runtime.
#[derive(Debug)]
pub struct ServerArgs {
    /// Where to listen.
    pub addr: String,
    /// The runtime, with `--threads` worker threads (default: one per core).
    pub runtime: tokio::runtime::Runtime,
}

/// Reads `--addr HOST:PORT [--threads N]` from the command line; `program` names the
/// binary in the usage message.
///
/// # Errors
/// A message for an unknown option or a missing or malformed value, or when the
/// runtime cannot be built.
pub fn server_args(program: &str) -> Result<ServerArgs, Box<dyn std::error::Error>> {
    let mut addr = None;
    let mut threads = std::thread::available_parallelism().map_or(1, usize::from);
    let mut args = std::env::args().skip(1);
    let usage = format!("usage: {program} --addr HOST:PORT [--threads N]");
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or(format!("{flag} needs a value; {usage}"))?;
        match flag.as_str() {
            "--addr" => addr = Some(value),
            "--threads" => threads = value.parse()?,
            other => return Err(format!("unknown option {other}; {usage}").into()),
        }
    }
    let addr = addr.ok_or(usage)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    Ok(ServerArgs { addr, runtime })
}
