//! Footprint benchmark: how big the release `tidewire` binary is and how
//! much memory an idle server holds, next to Mosquitto in the same run.
//!
//! For each binary: its size on disk and its ELF load segments (code,
//! read-only data, writable data). Then each server is started with no
//! clients (tidewire: `serve` on port-0 listeners in a temporary data
//! directory, waiting for its `http listening on` line; Mosquitto: `-p` on
//! a free port), left idle for `--idle` seconds, and measured from
//! `/proc/PID/status` (VmRSS, VmHWM, Threads) and `/proc/PID/smaps_rollup`
//! (Rss, Pss, Anonymous; file-backed = Rss - Anonymous). `/proc/PID/smaps`
//! attributes the resident memory to the binary's own mappings (code;
//! read-only data and relocation tables read from the file; data the
//! dynamic loader relocated, which is anonymous), shared libraries, heap,
//! malloc arenas and thread stacks; `/proc/PID/task/*/comm` names the
//! threads. Each server is then stopped with SIGTERM.
//!
//! Runs (`--runs`): `idle`; `sql`, the same server after one SQL query
//! (what the SQL engine faults in when first used); `demo`, tidewire
//! `serve --demo` (simulated devices publishing) after the idle time.
//!
//! By default each binary is dropped from the page cache before it starts
//! (`dd iflag=nocache`), as after a boot: file-backed RSS then counts the
//! pages the process touched plus the kernel's read-around. With
//! `--page-cache keep` it counts whatever the cache holds; right after a
//! link that is large folios, and the same binary shows 10+ MB more.
//!
//! `cargo build --release -p tidewire -p tidewire-benches &&
//!  target/release/footprint [--tidewire PATH] [--runs idle,sql,demo]`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use tidewire_benches::print_table;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// The query of the `sql` run: the README's example, over the default
/// stream.
const QUERY: &str = r#"{"sql":"SELECT avg(json_get_float(payload, 'temp')) FROM events"}"#;

#[derive(Debug, Parser)]
struct Args {
    /// The tidewire binary (default: next to this program, i.e.
    /// `$CARGO_TARGET_DIR/release/tidewire`).
    #[arg(long)]
    tidewire: Option<PathBuf>,
    /// The mosquitto binary.
    #[arg(long, default_value = "/usr/sbin/mosquitto")]
    mosquitto: PathBuf,
    /// Seconds each server sits idle before it is measured.
    #[arg(long, default_value_t = 5)]
    idle: u64,
    /// Which runs (idle, sql, demo); Mosquitto runs `idle` only.
    #[arg(long, value_delimiter = ',', default_value = "idle,sql")]
    runs: Vec<String>,
    /// `drop`: evict each binary from the page cache before starting it;
    /// `keep`: leave the cache as it is.
    #[arg(long, default_value = "drop")]
    page_cache: String,
    /// Also list every mapping of each measured process with at least this
    /// many KiB resident.
    #[arg(long)]
    maps_over_kib: Option<u64>,
}

/// What a measured process holds, in KiB unless said otherwise.
#[derive(Debug, Default)]
struct Footprint {
    vm_rss: u64,
    vm_hwm: u64,
    threads: u64,
    rss: u64,
    pss: u64,
    anonymous: u64,
    /// Resident KiB by where it lives (see [`Mapping::category`]).
    by_category: BTreeMap<&'static str, u64>,
    /// Thread names and how many threads carry each.
    thread_names: BTreeMap<String, usize>,
    /// Mappings with resident pages: (rss, anonymous, header line).
    mappings: Vec<(u64, u64, String)>,
}

impl Footprint {
    fn file_backed(&self) -> u64 {
        self.rss.saturating_sub(self.anonymous)
    }
}

/// One entry of `/proc/PID/smaps`.
#[derive(Debug, Default)]
struct Mapping {
    start: u64,
    end: u64,
    perms: String,
    path: String,
    header: String,
    rss: u64,
    anonymous: u64,
}

/// Where resident memory lives, in the order the table prints them.
const CATEGORIES: [&str; 9] = [
    "binary: code (file)",
    "binary: rodata, relocs, eh (file)",
    "binary: relocated data (anon)",
    "shared libraries",
    "heap (brk)",
    "malloc arenas, other anon",
    "thread stacks",
    "main stack",
    "other",
];

fn categorise(maps: &[Mapping], exe: &str, out: &mut BTreeMap<&'static str, u64>) {
    for (i, m) in maps.iter().enumerate() {
        let file = m.rss.saturating_sub(m.anonymous);
        let mut add = |category: &'static str, kib: u64| {
            if kib > 0 {
                *out.entry(category).or_default() += kib;
            }
        };
        if m.path == exe {
            if m.perms.contains('x') {
                add(CATEGORIES[0], file);
            } else {
                add(CATEGORIES[1], file);
            }
            add(CATEGORIES[2], m.anonymous);
        } else if m.path.contains(".so") {
            add(CATEGORIES[3], file);
            add(CATEGORIES[5], m.anonymous);
        } else if m.path == "[heap]" {
            add(CATEGORIES[4], m.rss);
        } else if m.path == "[stack]" {
            add(CATEGORIES[7], m.rss);
        } else if m.path.is_empty() {
            // A thread's stack is one mapping with its guard page, made
            // inaccessible, just below it; a malloc arena's reserve is
            // inaccessible above it and megabytes long.
            let guard_below = i.checked_sub(1).map(|j| &maps[j]).is_some_and(|g| {
                g.path.is_empty()
                    && g.perms.starts_with("---")
                    && g.end == m.start
                    && g.end - g.start <= 64 * 1024
            });
            if guard_below && m.perms.starts_with("rw") {
                add(CATEGORIES[6], m.rss);
            } else {
                add(CATEGORIES[5], m.rss);
            }
        } else {
            add(CATEGORIES[8], m.rss);
        }
    }
}

fn kib_field(line: &str) -> Option<u64> {
    line.split_whitespace().nth(1)?.parse().ok()
}

fn status_field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn parse_smaps(text: &str) -> Vec<Mapping> {
    let mut maps: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        {
            let perms = fields.next().unwrap_or("").to_owned();
            // offset, device, inode, then the path (which may hold spaces).
            let path = fields.skip(3).collect::<Vec<_>>().join(" ");
            maps.push(Mapping {
                start,
                end,
                perms,
                path,
                header: line.to_owned(),
                ..Mapping::default()
            });
        } else if let Some(m) = maps.last_mut() {
            if line.starts_with("Rss:") {
                m.rss = kib_field(line).unwrap_or(0);
            } else if line.starts_with("Anonymous:") {
                m.anonymous = kib_field(line).unwrap_or(0);
            }
        }
    }
    maps
}

/// Reads everything [`Footprint`] holds for process `pid`.
fn measure(pid: u32) -> Result<Footprint> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let status = std::fs::read_to_string(proc.join("status"))?;
    let rollup = std::fs::read_to_string(proc.join("smaps_rollup"))?;
    let field = |name: &str| {
        rollup
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(kib_field)
            .unwrap_or(0)
    };
    let exe = std::fs::read_link(proc.join("exe"))?
        .to_string_lossy()
        .into_owned();
    let maps = parse_smaps(&std::fs::read_to_string(proc.join("smaps"))?);
    let mut footprint = Footprint {
        vm_rss: status_field(&status, "VmRSS:"),
        vm_hwm: status_field(&status, "VmHWM:"),
        threads: status_field(&status, "Threads:"),
        rss: field("Rss:"),
        pss: field("Pss:"),
        anonymous: field("Anonymous:"),
        ..Footprint::default()
    };
    categorise(&maps, &exe, &mut footprint.by_category);
    footprint.mappings = maps
        .into_iter()
        .filter(|m| m.rss > 0)
        .map(|m| (m.rss, m.anonymous, m.header))
        .collect();
    footprint.mappings.sort_by_key(|m| std::cmp::Reverse(m.0));
    for task in std::fs::read_dir(proc.join("task"))? {
        let comm = std::fs::read_to_string(task?.path().join("comm")).unwrap_or_default();
        *footprint
            .thread_names
            .entry(comm.trim().to_owned())
            .or_default() += 1;
    }
    Ok(footprint)
}

/// The file bytes of an ELF binary's load segments, by permission.
#[derive(Debug, Default)]
struct Segments {
    code: u64,
    read_only: u64,
    writable: u64,
}

/// A binary's size on disk and its load segments (when it is a 64-bit
/// little-endian ELF file).
fn binary_size(path: &Path) -> Result<(u64, Option<Segments>)> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = file.metadata()?.len();
    // The ELF header and the program headers after it, not the whole file
    // (which would also fill the page cache with it).
    let mut head = Vec::new();
    file.take(64 * 1024).read_to_end(&mut head)?;
    Ok((size, load_segments(&head)))
}

/// Sums the file sizes of a 64-bit little-endian ELF file's PT_LOAD
/// segments by permission.
fn load_segments(elf: &[u8]) -> Option<Segments> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?));
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    let mut segments = Segments::default();
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(ph)? != 1 {
            continue; // not PT_LOAD
        }
        let flags = u32_at(ph + 4)?;
        let size = u64_at(ph + 0x20)?;
        match (flags & 1 != 0, flags & 2 != 0) {
            (true, _) => segments.code += size,
            (false, true) => segments.writable += size,
            (false, false) => segments.read_only += size,
        }
    }
    Some(segments)
}

/// Evicts `path` from the page cache (or says why not).
fn drop_from_page_cache(path: &Path) {
    let dropped = std::process::Command::new("dd")
        .arg(format!("if={}", path.display()))
        .args(["iflag=nocache", "count=0", "status=none"])
        .status();
    match dropped {
        Ok(s) if s.success() => {}
        Ok(s) => println!(
            "  (could not drop {} from the page cache: dd {s})",
            path.display()
        ),
        Err(e) => println!(
            "  (could not drop {} from the page cache: {e})",
            path.display()
        ),
    }
}

/// A server started by this program.
struct Server {
    child: Child,
    pid: u32,
    http: Option<std::net::SocketAddr>,
    _dir: tempfile::TempDir,
}

async fn start_tidewire(bin: &Path, demo: bool) -> Result<Server> {
    let dir = tempfile::tempdir()?;
    let mut command = Command::new(bin);
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
        ]);
    if demo {
        command.arg("--demo");
    }
    let mut child = command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id().context("no pid")?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut http = None;
    let started = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(addr) = line.strip_prefix("http listening on ") {
                http = Some(addr.parse()?);
                break;
            }
        }
        anyhow::Ok(())
    })
    .await;
    match started {
        Ok(result) => result?,
        Err(_) => bail!("tidewire did not print its http listener within 60 s"),
    }
    if http.is_none() {
        bail!("tidewire exited before listening");
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Server {
        child,
        pid,
        http,
        _dir: dir,
    })
}

async fn start_mosquitto(bin: &Path) -> Result<Server> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(bin)
        .args(["-p", &port.to_string()])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id().context("no pid")?;
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(Server {
                child,
                pid,
                http: None,
                _dir: dir,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("mosquitto did not start")
}

impl Server {
    /// SIGTERM, then waits up to 10 s; returns how it ended.
    async fn stop(mut self) -> Result<String> {
        let start = Instant::now();
        std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .context("running kill")?;
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(status) => Ok(format!(
                "{} in {:.2} s",
                status?,
                start.elapsed().as_secs_f64()
            )),
            Err(_) => {
                self.child.start_kill()?;
                Ok("did not stop within 10 s of SIGTERM; killed".into())
            }
        }
    }
}

/// Sends `QUERY` to tidewire's SQL API; returns the status line.
async fn one_query(http: std::net::SocketAddr) -> Result<String> {
    let mut stream = TcpStream::connect(http).await?;
    let request = format!(
        "POST /api/v1/sql HTTP/1.1\r\nHost: {http}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{QUERY}",
        QUERY.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response.lines().next().unwrap_or("").to_owned())
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let drop_cache = match args.page_cache.as_str() {
        "drop" => true,
        "keep" => false,
        other => bail!("--page-cache is drop or keep, not {other}"),
    };
    let tidewire = match args.tidewire.clone() {
        Some(path) => path,
        None => {
            let next_to_us = tidewire_benches::peers::tidewire_bin(None)?;
            match std::env::var_os("CARGO_TARGET_DIR") {
                Some(dir) if !next_to_us.exists() => PathBuf::from(dir).join("release/tidewire"),
                _ => next_to_us,
            }
        }
    };
    let mosquitto = args.mosquitto.exists().then_some(args.mosquitto.clone());

    println!(
        "footprint: idle {} s; page cache {}",
        args.idle, args.page_cache
    );
    println!();
    let mut sizes = Vec::new();
    let binaries = [
        ("tidewire", Some(tidewire.clone())),
        ("mosquitto", mosquitto.clone()),
    ];
    for (name, path) in &binaries {
        let Some(path) = path else {
            sizes.push(vec![
                name.to_string(),
                "absent".into(),
                String::new(),
                String::new(),
                String::new(),
                format!(
                    "{} (apt-get install -y mosquitto)",
                    args.mosquitto.display()
                ),
            ]);
            continue;
        };
        let (size, segments) = binary_size(path)?;
        let (code, read_only, writable) = match segments {
            Some(s) => (mb(s.code), mb(s.read_only), mb(s.writable)),
            None => ("?".into(), "?".into(), "?".into()),
        };
        sizes.push(vec![
            name.to_string(),
            mb(size),
            code,
            read_only,
            writable,
            path.display().to_string(),
        ]);
    }
    print_table(
        &["binary", "on disk", "code", "read-only", "writable", "path"],
        &sizes,
    );
    if mosquitto.is_none() {
        println!(
            "mosquitto is absent at {}: install it with apt-get install -y mosquitto",
            args.mosquitto.display()
        );
    }
    println!();

    let idle = Duration::from_secs(args.idle);
    let chosen = |name: &str| args.runs.iter().any(|r| r == name);
    let mut results: Vec<(String, Footprint, String)> = Vec::new();
    if chosen("idle") || chosen("sql") {
        if drop_cache {
            drop_from_page_cache(&tidewire);
        }
        let server = start_tidewire(&tidewire, false).await?;
        tokio::time::sleep(idle).await;
        if chosen("idle") {
            results.push(("tidewire idle".into(), measure(server.pid)?, String::new()));
        }
        if chosen("sql") {
            let http = server.http.context("no http listener")?;
            let status = one_query(http).await?;
            tokio::time::sleep(idle).await;
            results.push((
                "tidewire after 1 SQL query".into(),
                measure(server.pid)?,
                status,
            ));
        }
        let stopped = server.stop().await?;
        println!("tidewire: stopped: {stopped}");
    }
    if chosen("demo") {
        if drop_cache {
            drop_from_page_cache(&tidewire);
        }
        let server = start_tidewire(&tidewire, true).await?;
        tokio::time::sleep(idle).await;
        results.push((
            "tidewire --demo".into(),
            measure(server.pid)?,
            String::new(),
        ));
        let stopped = server.stop().await?;
        println!("tidewire --demo: stopped: {stopped}");
    }
    if let Some(path) = &mosquitto {
        if drop_cache {
            drop_from_page_cache(path);
        }
        let server = start_mosquitto(path).await?;
        tokio::time::sleep(idle).await;
        results.push(("mosquitto idle".into(), measure(server.pid)?, String::new()));
        let stopped = server.stop().await?;
        println!("mosquitto: stopped: {stopped}");
    }
    for (name, _, note) in &results {
        if !note.is_empty() {
            println!("{name}: {note}");
        }
    }
    println!();

    println!("Memory, MiB (file-backed = Rss - Anonymous; Pss shares pages with other processes):");
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|(name, f, _)| {
            vec![
                name.clone(),
                mib(f.vm_rss),
                mib(f.vm_hwm),
                mib(f.anonymous),
                mib(f.file_backed()),
                mib(f.pss),
                f.threads.to_string(),
            ]
        })
        .collect();
    print_table(
        &["run", "VmRSS", "VmHWM", "anon", "file", "Pss", "threads"],
        &rows,
    );
    println!();

    println!("Resident memory by where it lives, MiB (from /proc/PID/smaps):");
    let mut header = vec!["where"];
    header.extend(results.iter().map(|(name, _, _)| name.as_str()));
    let rows: Vec<Vec<String>> = CATEGORIES
        .iter()
        .map(|category| {
            let mut row = vec![category.to_string()];
            row.extend(
                results
                    .iter()
                    .map(|(_, f, _)| mib(f.by_category.get(category).copied().unwrap_or(0))),
            );
            row
        })
        .collect();
    print_table(&header, &rows);
    println!();

    println!("Threads (name x count):");
    for (name, f, _) in &results {
        let threads: Vec<String> = f
            .thread_names
            .iter()
            .map(|(n, c)| {
                if *c == 1 {
                    n.clone()
                } else {
                    format!("{n} x{c}")
                }
            })
            .collect();
        println!("  {name}: {}", threads.join(", "));
    }

    if let Some(over) = args.maps_over_kib {
        for (name, f, _) in &results {
            println!();
            println!("{name}: mappings with at least {over} KiB resident (Rss, Anonymous KiB):");
            for (rss, anon, header) in f.mappings.iter().filter(|m| m.0 >= over) {
                println!("  {rss:>7} {anon:>7}  {header}");
            }
        }
    }
    Ok(())
}
