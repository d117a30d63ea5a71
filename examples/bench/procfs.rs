//! What `/proc` says about the server under test and the machine: memory, CPU time per process
//! and per thread group, load average, the temp dir's file system.

use super::*;

// ---- /proc ------------------------------------------------------------------------------------------

/// A numeric field of `/proc/<pid>/status` (`VmRSS`, `VmHWM` in KiB; `Threads` a count).
pub(super) fn proc_status_field(pid: u32, key: &str) -> Result<u64, String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no {key} in /proc/{pid}/status"))
}

/// `(comm, user + system CPU seconds)` from a `/proc/.../stat` file. The name is in parentheses
/// and may hold spaces, so the numeric fields are counted from the last `)`: field 3 (state) is
/// the first after it, so utime (14) and stime (15) are the 12th and 13th.
pub(super) fn parse_stat(text: &str) -> Option<(String, f64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((text[open + 1..close].to_string(), ticks as f64 / USER_HZ))
}

/// CPU seconds of a whole process (`self` or a pid), exited threads included.
pub(super) fn process_cpu_seconds(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().as_deref().and_then(parse_stat).map_or(0.0, |s| s.1)
}

/// One thread's cumulative times.
#[derive(Clone, Default)]
pub(super) struct ThreadTimes {
    pub(super) name: String,
    /// CPU seconds: the run time of `schedstat` (ns), else user + system time of `stat` (in
    /// ticks of 10 ms, too coarse for a thread that ran a few ms).
    pub(super) cpu: f64,
    /// Seconds spent runnable but waiting for a CPU (`schedstat`; 0 without schedstats): time
    /// lost to the other threads and processes on the machine, not to locks or I/O.
    pub(super) wait: f64,
}

/// Per thread of a process: tid ─► times.
pub(super) type ThreadCpu = BTreeMap<u64, ThreadTimes>;

/// Per thread of `pid`: tid ─► times.
pub(super) fn thread_cpu(pid: u32) -> ThreadCpu {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return BTreeMap::new() };
    dir.flatten()
        .filter_map(|e| {
            let tid = e.file_name().to_str()?.parse().ok()?;
            let (name, ticks) = parse_stat(&std::fs::read_to_string(e.path().join("stat")).ok()?)?;
            // "<run ns> <wait ns> <timeslices>"
            let sched: Vec<f64> = std::fs::read_to_string(e.path().join("schedstat"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|f| f.parse::<u64>().ok().map(|ns| ns as f64 / 1e9))
                .collect();
            let (cpu, wait) = match sched[..] {
                [run, wait, ..] => (run, wait),
                _ => (ticks, 0.0),
            };
            Some((tid, ThreadTimes { name, cpu, wait }))
        })
        .collect()
}

/// The group of a thread: `worker-3` ─► `worker-*`; the main thread; `(unnamed)` for threads that
/// kept the process name.
pub(super) fn thread_group(pid: u32, tid: u64, name: &str, process_name: Option<&str>) -> String {
    match name.rsplit_once('-') {
        _ if tid == u64::from(pid) => "main".to_string(),
        _ if Some(name) == process_name => "(unnamed)".to_string(),
        Some((stem, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => format!("{stem}-*"),
        _ => name.to_string(),
    }
}

/// CPU and CPU-wait seconds of each thread over the window (threads that ended are missing).
pub(super) fn thread_deltas<'a>(
    before: &'a ThreadCpu,
    after: &'a ThreadCpu,
) -> impl Iterator<Item = (u64, &'a str, f64, f64)> {
    after.iter().map(|(tid, t)| {
        let b = before.get(tid);
        (*tid, t.name.as_str(), t.cpu - b.map_or(0.0, |b| b.cpu), t.wait - b.map_or(0.0, |b| b.wait))
    })
}

/// Server CPU over the window, per thread group (`worker-3` ─► `worker-*`), busiest first: the
/// group's total and its busiest thread, in % of one core. A thread near 100% is a bottleneck
/// that more CPUs cannot fix; a group near `threads × 100%` is saturated. hookflow names its own
/// threads; the unnamed ones (they inherit the process name) are tiny_http's accept thread and
/// connection pool, which read requests off the sockets.
pub(super) fn cpu_by_group(pid: u32, before: &ThreadCpu, after: &ThreadCpu, window: f64) -> Vec<String> {
    let mut groups: BTreeMap<String, (usize, f64, f64, f64)> = BTreeMap::new();
    let process_name = after.get(&u64::from(pid)).map(|t| t.name.as_str());
    for (tid, name, used, waited) in thread_deltas(before, after) {
        let g = groups.entry(thread_group(pid, tid, name, process_name)).or_default();
        g.0 += 1;
        g.1 += used;
        g.2 = g.2.max(used);
        g.3 += waited;
    }
    let mut rows: Vec<_> = groups.into_iter().filter(|g| g.1.1 > 0.0).collect();
    rows.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
    rows.iter()
        .map(|(name, (n, total, max, waited))| {
            let pct = |s: f64| 100.0 * s / window.max(1e-9);
            format!(
                "{name:<16} x{n:<3} {:>5.0}%  (busiest thread {:.0}%; runnable, waiting for a CPU {:.0}%)",
                pct(*total),
                pct(*max),
                pct(*waited)
            )
        })
        .collect()
}

/// CPU seconds over the window of the threads whose name starts with `prefix`.
pub(super) fn prefix_cpu(before: &ThreadCpu, after: &ThreadCpu, prefix: &str) -> f64 {
    thread_deltas(before, after).filter(|t| t.1.starts_with(prefix)).map(|t| t.2).sum()
}

/// CPU count, model name and memory of this machine.
pub(super) fn machine() -> (usize, String, String) {
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU model".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:")?.split_whitespace().next()?.parse::<u64>().ok())
        .map_or_else(|| "unknown memory".into(), |kib| format!("{:.1} GiB RAM", kib as f64 / 1048576.0));
    (cpus, model, mem)
}

/// The 1-minute load average: other work on the machine (a build, a test run) skews every number.
pub(super) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| Some(l.split_whitespace().next()?.to_string()))
        .unwrap_or_else(|| "unknown".into())
}

/// The filesystem type holding `dir` (longest mount point that is a prefix of it), from
/// `/proc/mounts`: what an fsync costs (`durability: full`) depends on it.
pub(super) fn fs_type(dir: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, kind) = (f.next()?, f.next()?, f.next()?);
            dir.starts_with(point).then(|| (point.len(), kind.to_string()))
        })
        .max()
        .map_or_else(|| "an unknown filesystem".into(), |(_, kind)| kind)
}
