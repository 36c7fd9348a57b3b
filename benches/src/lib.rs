//! Shared pieces of tidewire's benchmark programs: latency percentiles,
//! peak memory, and a table printer, so every program reports the same
//! way. The programs themselves are in `src/bin/`.

pub mod peers;
pub mod raw_amqp;
pub mod raw_http;
pub mod raw_mqtt;

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, EventLoop, MqttOptions};

/// A payload of `size` bytes (at least 21) carrying its send time, ns since
/// `epoch`, as leading ASCII digits: text, so it travels unchanged through
/// every protocol, JSON frames included.
pub fn stamp(epoch: Instant, size: usize) -> Vec<u8> {
    let mut payload = format!("{:020}", epoch.elapsed().as_nanos()).into_bytes();
    payload.resize(size.max(payload.len() + 1), b'x');
    payload
}

/// Time since the send time in a [`stamp`]ed payload.
pub fn latency(epoch: Instant, payload: &[u8]) -> Duration {
    let sent = payload
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0u64, |n, b| {
            n.wrapping_mul(10).wrapping_add(u64::from(b - b'0'))
        });
    epoch.elapsed().saturating_sub(Duration::from_nanos(sent))
}

/// An MQTT client without Nagle's algorithm, which would hold small
/// packets back for the peer's delayed ACK (40 ms on Linux) and show up as
/// latency that belongs to neither broker.
pub fn mqtt_client(options: MqttOptions, capacity: usize) -> (AsyncClient, EventLoop) {
    let (client, mut events) = AsyncClient::new(options, capacity);
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    events.set_network_options(network);
    (client, events)
}

/// Latency samples in microseconds, summarised as percentiles.
#[derive(Debug, Default)]
pub struct Latencies {
    micros: Vec<u32>,
}

impl Latencies {
    /// Records one sample.
    pub fn record(&mut self, d: Duration) {
        self.micros
            .push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
    }

    /// Adds another set of samples.
    pub fn merge(&mut self, other: Latencies) {
        self.micros.extend(other.micros);
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.micros.len()
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.micros.is_empty()
    }

    /// The `p`-th percentile (0–100) in milliseconds.
    pub fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.micros.is_empty() {
            return f64::NAN;
        }
        self.micros.sort_unstable();
        let rank = ((p / 100.0) * (self.micros.len() - 1) as f64).round() as usize;
        f64::from(self.micros[rank]) / 1000.0
    }
}

/// Peak resident memory of this process in MiB (VmHWM), if known.
pub fn peak_rss_mib() -> Option<f64> {
    proc_status_kib("VmHWM:").map(|kib| kib as f64 / 1024.0)
}

/// Resident memory of process `pid` in KiB (VmRSS), if known.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    field_kib(&status, "VmRSS:")
}

/// CPU time process `pid` (all its threads) has used, in clock ticks
/// (utime + stime in `/proc/PID/stat`), if known.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    process_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// CPU time the whole machine has been busy, in clock ticks (every
/// column of `/proc/stat`'s `cpu` line but idle and iowait), if known.
pub fn machine_busy_ticks() -> Option<u64> {
    machine_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// Clock ticks per second of [`cpu_ticks`] and [`machine_busy_ticks`]
/// (`USER_HZ`, 100 on Linux).
pub const TICKS_PER_SECOND: f64 = 100.0;

fn process_ticks(stat: &str) -> Option<u64> {
    // The command name, in brackets, may hold spaces: count from after it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn machine_ticks(stat: &str) -> Option<u64> {
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest is in user).
    Some(cpu.iter().take(8).sum::<u64>() - cpu.get(3)? - cpu.get(4)?)
}

fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    field_kib(&status, field)
}

fn field_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Prints rows as an aligned table with a header.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(header.iter().map(|h| h.to_string()).collect()));
    for row in rows {
        println!("{}", line(row.clone()));
    }
}

/// Runs a Python benchmark script; its stdout, or `None` (after saying
/// why) when it fails, e.g. because the Python package is missing.
pub fn python(
    name: &str,
    script: &str,
    args: &[&std::path::Path],
    extra: &[String],
) -> anyhow::Result<Option<String>> {
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .args(extra)
        .output()?;
    if !output.status.success() {
        println!(
            "{name} skipped: {}",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return Ok(None);
    }
    Ok(Some(String::from_utf8(output.stdout)?))
}

/// An in-process broker over `specs`, in `dir`, with default limits and
/// its metrics in `registry`.
pub fn in_process_broker(
    dir: &std::path::Path,
    specs: Vec<tidewire_core::StreamSpec>,
    registry: &mut prometheus_client::registry::Registry,
) -> anyhow::Result<tidewire_core::Broker> {
    let streams = tidewire_core::Streams::open(
        dir,
        specs,
        &tidewire_storage::StorageMetrics::register(registry),
        std::sync::Arc::new(|_| {}),
    )?;
    Ok(tidewire_core::Broker::new(
        streams,
        tidewire_core::Limits::default(),
        tidewire_core::PublishMetrics::register(registry),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut l = Latencies::default();
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        assert_eq!(l.percentile_ms(50.0), 51.0);
        assert_eq!(l.percentile_ms(99.0), 99.0);
        assert_eq!(l.percentile_ms(100.0), 100.0);
    }

    #[test]
    fn parses_proc_status() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(field_kib(status, "VmHWM:"), Some(2048));
        assert_eq!(field_kib(status, "VmRSS:"), Some(1024));
        assert!(peak_rss_mib().is_some());
    }

    #[test]
    fn parses_cpu_ticks() {
        let stat = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 1 0";
        assert_eq!(process_ticks(stat), Some(280));
        let machine = "cpu  100 5 20 1000 7 1 2 3 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(machine_ticks(machine), Some(131));
        assert!(cpu_ticks(std::process::id()).is_some());
        assert!(machine_busy_ticks().is_some());
    }
}
