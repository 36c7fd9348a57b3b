//! Pattern matching benchmark (issue 20): events matched per second on
//! one core against 10, 1,000 and 10,000 SNS-style filter policies,
//! compiled into one `tidewire_patterns::Matcher`, beside the naive loop
//! (`Pattern::matches` on each policy in turn) over the same policies and
//! events in the same run.
//!
//! The events are IoT readings: a device id out of 100,000, its type, its
//! site (100 devices a site), firmware, severity, temperature, humidity,
//! pressure, battery, an alarm flag, an address and tags. The policies are
//! what subscribers to such a topic write: a few device ids (with or
//! without a temperature threshold), a site with device types and a
//! temperature band, a device-id prefix with an anything-but on severity,
//! a site with an `$or` of alarm or low battery, pumps of a site over a
//! pressure with a firmware prefix, a site prefix with `exists: false`,
//! and a CIDR block with device types. Each one is selective, as
//! subscriptions are, so an event matches few of them; but more of them
//! the more there are (about 0, 0.1 and 1.2 at 10, 1,000 and 10,000), and
//! it walks into more states partway along one (a site's, a device
//! type's) before it fails: what an event costs grows with those, as
//! `states` and `lookups` show.
//!
//! It measures, per policy count, cycling through the events:
//! - **matcher**: `Matcher::for_each_match` over pre-flattened events;
//! - **matching none**: the same over only the events that match no
//!   policy at this count, so that the sizes also compare at the same
//!   number of matches per event (none; reporting a match is work the
//!   matcher cannot avoid);
//! - **packed**: the matcher over copies of the events packed back to
//!   back: `Event::from_json` leaves room to grow in an event's buffers,
//!   so the events of the columns above are spread over more memory and
//!   reading one costs cache misses that are the same at every policy
//!   count (and that an event the broker has just flattened does not
//!   cost);
//! - **flatten + match**: `Event::from_json` then the matcher, from a
//!   parsed `serde_json::Value`;
//! - **naive**: every policy's `Pattern::matches` over pre-flattened events;
//!
//! and checks on a sample of events that the matcher and the naive loop
//! find the same policies. Beside the rates it prints what an event costs
//! the matcher on average (`Matcher::work`): the policies it matches, the
//! states it reaches and the lookups it makes there, which is what the
//! time per event follows. The matcher columns are the best of `--rounds`
//! rounds, the policy counts taking turns, so that another process's burst
//! of work on a shared machine does not decide the result. Then it prints
//! whether issue 20's targets are met: at least 1 million events/s per
//! core at 1,000 policies, and 10,000 policies costing at most 2x what 10
//! cost, over all events and over the events matching none.
//!
//! `cargo build --release -p tidewire -p tidewire-benches &&
//!  target/release/patterns`

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use clap::Parser;
use serde_json::{Value, json};
use tidewire_benches::print_table;
use tidewire_patterns::{Event, Matcher, Pattern};

#[derive(Debug, Parser)]
struct Args {
    /// Policy counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [10, 1_000, 10_000])]
    policies: Vec<usize>,
    /// Distinct events, cycled through.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Rounds of the matcher measurements (the best counts).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seed of the generator.
    #[arg(long, default_value_t = 20)]
    seed: u64,
}

const DEVICES: u64 = 100_000;
const DEVICES_PER_SITE: u64 = 100;
const TYPES: [&str; 6] = ["thermostat", "hvac", "pump", "valve", "meter", "camera"];
const SEVERITIES: [&str; 4] = ["debug", "info", "warning", "error"];

/// xorshift64*: reproducible, and no dependency for it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    /// A number in `lo..hi` with one decimal.
    fn tenths(&mut self, lo: i64, hi: i64) -> f64 {
        let span = u64::try_from((hi - lo) * 10).unwrap_or(1);
        (lo * 10 + i64::try_from(self.below(span)).unwrap_or(0)) as f64 / 10.0
    }
}

fn device(n: u64) -> String {
    format!("dev-{n:05}")
}

fn site(n: u64) -> String {
    format!("plant-{:03}", n / DEVICES_PER_SITE)
}

fn event(rng: &mut Rng) -> Value {
    let n = rng.below(DEVICES);
    let kind = TYPES[(n % TYPES.len() as u64) as usize];
    let mut event = json!({
        "device_id": device(n),
        "device_type": kind,
        "site": site(n),
        "firmware": format!("{}.{}.{}", 1 + rng.below(3), rng.below(10), rng.below(20)),
        "severity": rng.pick(&SEVERITIES),
        "temperature": rng.tenths(-10, 45),
        "humidity": rng.below(100),
        "pressure": rng.tenths(900, 1100),
        "battery": rng.below(101),
        "alarm": rng.below(50) == 0,
        "ip": format!("10.{}.{}.{}", n / 1000, (n / 10) % 100, n % 10 + 1),
        "tags": ["edge", if n.is_multiple_of(2) { "indoor" } else { "outdoor" }],
    });
    if rng.below(10) == 0 {
        event["maintenance"] = json!("scheduled");
    }
    event
}

fn policy(rng: &mut Rng) -> Value {
    let n = rng.below(DEVICES);
    match rng.below(20) {
        0..=5 => {
            let ids: Vec<String> = (0..1 + rng.below(3))
                .map(|_| device(rng.below(DEVICES)))
                .collect();
            if rng.below(2) == 0 {
                json!({"device_id": ids})
            } else {
                json!({"device_id": ids, "temperature": [{"numeric": [">", rng.tenths(10, 40)]}]})
            }
        }
        6..=9 => {
            let lo = rng.tenths(-5, 30);
            json!({
                "site": [site(n)],
                "device_type": [rng.pick(&TYPES), rng.pick(&TYPES)],
                "temperature": [{"numeric": [">=", lo, "<", lo + 5.0 + rng.tenths(0, 10)]}],
            })
        }
        10..=12 => json!({
            "device_id": [{"prefix": format!("dev-{:04}", n / 10)}],
            "severity": [{"anything-but": ["debug", "info"]}],
        }),
        13..=14 => json!({
            "site": [site(n)],
            "$or": [{"alarm": [true]}, {"battery": [{"numeric": ["<", 5 + rng.below(15)]}]}],
        }),
        15..=16 => json!({
            "device_type": ["pump"],
            "site": [site(n)],
            "pressure": [{"numeric": [">", rng.tenths(950, 1090)]}],
            "firmware": [{"prefix": "2."}],
        }),
        17..=18 => json!({
            "site": [{"prefix": format!("plant-{:02}", n / 10_000)}],
            "maintenance": [{"exists": false}],
            "severity": ["error"],
            "device_type": [rng.pick(&TYPES)],
        }),
        _ => json!({
            "ip": [{"cidr": format!("10.{}.0.0/16", n / 1000)}],
            "device_type": [rng.pick(&TYPES), "camera"],
            "severity": [{"equals-ignore-case": "ERROR"}],
        }),
    }
}

struct Measured {
    events_per_sec: f64,
    per_event: Duration,
}

/// One policy count: its matcher, and what was measured of it.
struct Run {
    count: usize,
    matcher: Matcher<usize>,
    compile: Duration,
    /// Per event, on average over all of them.
    matches: f64,
    states: f64,
    lookups: f64,
    /// The events that match no policy at this count, by index.
    unmatched: Vec<usize>,
    naive: Measured,
    compiled: Option<Measured>,
    quiet: Option<Measured>,
    packed: Option<Measured>,
    flattened: Option<Measured>,
}

fn best(a: Option<Measured>, b: Measured) -> Option<Measured> {
    match a {
        Some(a) if a.events_per_sec >= b.events_per_sec => Some(a),
        _ => Some(b),
    }
}

/// Runs `f` over `events` in a cycle for about `seconds`; `f` returns a
/// count that is accumulated so the work is not optimised away.
fn measure<T>(events: &[T], seconds: f64, mut f: impl FnMut(&T) -> usize) -> Measured {
    let budget = Duration::from_secs_f64(seconds);
    let mut done = 0u64;
    let mut sink = 0usize;
    let start = Instant::now();
    'outer: loop {
        for chunk in events.chunks(64) {
            for e in chunk {
                sink = sink.wrapping_add(f(e));
            }
            done += chunk.len() as u64;
            if start.elapsed() >= budget {
                break 'outer;
            }
        }
    }
    black_box(sink);
    let elapsed = start.elapsed();
    Measured {
        events_per_sec: done as f64 / elapsed.as_secs_f64(),
        per_event: elapsed / u32::try_from(done).unwrap_or(u32::MAX).max(1),
    }
}

fn rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M/s", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k/s", x / 1e3)
    } else {
        format!("{x:.0} /s")
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut rng = Rng(args.seed | 1);
    let jsons: Vec<Value> = (0..args.events).map(|_| event(&mut rng)).collect();
    let events: Vec<Event> = jsons.iter().map(Event::from_json).collect();
    let most = args.policies.iter().copied().max().unwrap_or(0);
    let policies: Vec<Pattern> = (0..most)
        .map(|_| Pattern::parse(&policy(&mut rng)))
        .collect::<Result<_, _>>()?;

    println!(
        "{} distinct IoT events ({} fields each), {} rounds of {:.1} s, one thread",
        events.len(),
        events.first().map_or(0, Event::len),
        args.rounds,
        args.seconds
    );
    let mut runs = Vec::new();
    for &count in &args.policies {
        let policies = &policies[..count];
        let built = Instant::now();
        let mut matcher = Matcher::new();
        for (id, policy) in policies.iter().enumerate() {
            matcher.add(id, policy);
        }
        let compile = built.elapsed();
        // The matcher and the naive loop agree (on a sample).
        let sample = events.len().min(2_000);
        for event in &events[..sample] {
            let mut found = matcher.matches(event);
            found.sort_unstable();
            let expected: Vec<usize> = (0..count).filter(|&i| policies[i].matches(event)).collect();
            ensure!(
                found == expected,
                "matcher and naive loop disagree on {event:?}"
            );
        }
        let (mut matches, mut states, mut lookups) = (0, 0, 0);
        let mut unmatched = Vec::new();
        for (i, event) in events.iter().enumerate() {
            let work = matcher.work(event);
            matches += work.matches;
            states += work.states;
            lookups += work.lookups;
            if work.matches == 0 {
                unmatched.push(i);
            }
        }
        let per_event = |n: usize| n as f64 / events.len() as f64;
        let naive = measure(&events, args.seconds, |e| {
            policies.iter().filter(|p| p.matches(e)).count()
        });
        runs.push(Run {
            count,
            matcher,
            compile,
            matches: per_event(matches),
            states: per_event(states),
            lookups: per_event(lookups),
            unmatched,
            naive,
            compiled: None,
            quiet: None,
            packed: None,
            flattened: None,
        });
    }
    // The events again, each copied into allocations of its exact size,
    // back to back: `Event::from_json` leaves room to grow in each, so the
    // events above are spread over more memory, and reading one costs more
    // cache misses.
    let packed: Vec<Event> = events.to_vec();
    for _ in 0..args.rounds {
        for run in &mut runs {
            let matcher = &run.matcher;
            let compiled = measure(&events, args.seconds, |e| {
                let mut n = 0;
                matcher.for_each_match(e, |_| n += 1);
                n
            });
            // (Every event matches a policy: nothing to measure.)
            // The same events where they are (so with the same cost of
            // reading them as the column above).
            let quiet = (!run.unmatched.is_empty()).then(|| {
                measure(&run.unmatched, args.seconds, |&i| {
                    let mut n = 0;
                    matcher.for_each_match(&events[i], |_| n += 1);
                    n
                })
            });
            let packed = measure(&packed, args.seconds, |e| {
                let mut n = 0;
                matcher.for_each_match(e, |_| n += 1);
                n
            });
            let flattened = measure(&jsons, args.seconds, |j| {
                let mut n = 0;
                matcher.for_each_match(&Event::from_json(j), |_| n += 1);
                n
            });
            run.compiled = best(run.compiled.take(), compiled);
            if let Some(quiet) = quiet {
                run.quiet = best(run.quiet.take(), quiet);
            }
            run.packed = best(run.packed.take(), packed);
            run.flattened = best(run.flattened.take(), flattened);
        }
    }

    let mut rows = Vec::new();
    let mut per_event = Vec::new();
    for run in &runs {
        let (Some(compiled), Some(packed), Some(flattened)) =
            (&run.compiled, &run.packed, &run.flattened)
        else {
            continue;
        };
        let quiet = run.quiet.as_ref().map(|q| q.per_event);
        per_event.push((run.count, compiled.per_event, quiet, packed.per_event));
        rows.push(vec![
            run.count.to_string(),
            rate(compiled.events_per_sec),
            format!("{} ns", compiled.per_event.as_nanos()),
            format!(
                "{} ({:.0}%)",
                quiet.map_or("-".into(), |q| format!("{} ns", q.as_nanos())),
                100.0 * run.unmatched.len() as f64 / events.len() as f64
            ),
            format!("{} ns", packed.per_event.as_nanos()),
            rate(flattened.events_per_sec),
            rate(run.naive.events_per_sec),
            format!("{:.0}x", compiled.events_per_sec / run.naive.events_per_sec),
            format!("{:.2}", run.matches),
            format!("{:.1}", run.states),
            format!("{:.1}", run.lookups),
            format!("{:.0} ms", run.compile.as_secs_f64() * 1e3),
        ]);
    }
    print_table(
        &[
            "policies",
            "matcher",
            "per event",
            "matching none",
            "packed",
            "flatten + match",
            "naive loop",
            "speedup",
            "matches",
            "states",
            "lookups",
            "compile",
        ],
        &rows,
    );
    println!(
        "(matching none: per event over the events that match no policy, and their share; \
         packed: per event over copies of the events packed back to back; \
         matches, states, lookups: per event, on average)"
    );

    let at = |n: usize| per_event.iter().find(|(c, ..)| *c == n).copied();
    if let Some((_, thousand, ..)) = at(1_000) {
        let eps = 1e9 / thousand.as_nanos() as f64;
        let verdict = if eps >= 1e6 { "met" } else { "NOT met" };
        println!(
            "target: >= 1 M events/s per core at 1,000 policies: {} ({verdict})",
            rate(eps)
        );
    }
    if let (Some((_, ten, ten_quiet, ten_packed)), Some((_, ten_k, ten_k_quiet, ten_k_packed))) =
        (at(10), at(10_000))
    {
        let verdict = |r: f64| if r <= 2.0 { "met" } else { "NOT met" };
        let ratio = ten_k.as_secs_f64() / ten.as_secs_f64();
        let packed = ten_k_packed.as_secs_f64() / ten_packed.as_secs_f64();
        print!(
            "target: 10,000 policies cost <= 2x what 10 cost: {ratio:.2}x over all events ({}), \
             {packed:.2}x packed ({})",
            verdict(ratio),
            verdict(packed)
        );
        if let (Some(ten_quiet), Some(ten_k_quiet)) = (ten_quiet, ten_k_quiet) {
            let quiet = ten_k_quiet.as_secs_f64() / ten_quiet.as_secs_f64();
            print!(
                ", {quiet:.2}x over the events matching none ({})",
                verdict(quiet)
            );
        }
        println!();
    }
    Ok(())
}
