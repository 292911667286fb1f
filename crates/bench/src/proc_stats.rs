//! CPU time and resident memory of a process, read from `/proc`.

use std::time::Duration;

/// CPU time (user + system, all threads) of a process.
pub fn cpu_time(pid: u32) -> std::io::Result<Duration> {
    cpu_times(pid).map(|(user, system)| user + system)
}

/// CPU time of a process in user space and in the kernel, apart (all threads).
pub fn cpu_times(pid: u32) -> std::io::Result<(Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start after ')'.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after ')'.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let hz = clock_ticks_per_second() as f64;
    let seconds = |ticks: u64| Duration::from_secs_f64(ticks as f64 / hz);
    Ok((seconds(ticks(11)), seconds(ticks(12))))
}

fn clock_ticks_per_second() -> u64 {
    // USER_HZ is 100 on every Linux this runs on; getconf confirms when present.
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Resident set size of a process, in bytes.
pub fn rss_bytes(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0);
    Ok(kb * 1024)
}
