//! SQL that tries to hurt the engine: statements nested deep enough to
//! overflow a planner's stack, functions that build huge values, runaway
//! joins, errors in the data, and more queries than may run. Every one
//! ends with an answer or a clear error, and the engine keeps answering.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tidewire_sql::sandbox::{
    MAX_BRACKET_DEPTH, MAX_NESTING, MAX_QUERY_NESTING, MAX_RELATIONS, MAX_SQL_BYTES,
};

use super::*;

/// Wraps an expression in one more level.
type Wrap = fn(&str) -> String;

/// Ways of nesting one level deeper, by name.
const NESTINGS: &[(&str, Wrap)] = &[
    ("plus", |e| format!("{e} + 1")),
    ("minus", |e| format!("1 - {e}")),
    ("and", |e| format!("({e}) IS NOT NULL AND true")),
    ("or", |e| format!("false OR ({e}) IS NOT NULL")),
    ("negation", |e| format!("-({e})")),
    ("function", |e| format!("abs({e})")),
    ("case", |e| format!("CASE WHEN true THEN {e} ELSE 0 END")),
    ("cast", |e| format!("CAST({e} AS BIGINT)")),
    ("subquery", |e| format!("(SELECT {e})")),
    ("parentheses", |e| format!("({e})")),
    ("coalesce", |e| format!("coalesce({e}, 0)")),
    ("in", |e| {
        format!("CASE WHEN {e} IN (1, 2) THEN 1 ELSE 1 END")
    }),
];

fn nested(kind: Wrap, depth: usize) -> String {
    let mut expr = "1".to_owned();
    for _ in 0..depth {
        expr = kind(&expr);
    }
    format!("SELECT {expr} AS v")
}

fn limits(timeout: Duration) -> SqlLimits {
    SqlLimits {
        memory_limit: 64 << 20,
        total_memory_limit: 128 << 20,
        query_timeout: timeout,
        ..SqlLimits::default()
    }
}

#[tokio::test]
async fn deep_statements_are_refused_never_a_crash() -> Result<()> {
    let f = fixture_with(&["name = \"events\""], limits(Duration::from_secs(30)))?;
    for &(name, kind) in NESTINGS {
        // Just within the limits runs: a quarter of the expression depth
        // (a level may be up to 4 nodes deep), the bracket depth less one
        // (a level adds a bracket, a CASE, or both), the query depth.
        let depth = match name {
            "plus" | "minus" => MAX_NESTING - 2,
            "subquery" => MAX_QUERY_NESTING - 1,
            "in" => MAX_BRACKET_DEPTH / 2,
            _ => MAX_BRACKET_DEPTH - 1,
        };
        let answer = f.engine.query(&nested(kind, depth)).await;
        ensure!(answer.is_ok(), "{name} at depth {depth}: {answer:?}");
        // Just past the limit, and as deep as the text limit allows.
        for depth in [MAX_NESTING + 1, 20_000] {
            let sql = nested(kind, depth);
            if sql.len() > MAX_SQL_BYTES {
                let err = f.engine.query(&sql).await.expect_err("too long");
                ensure!(err.to_string().contains("bytes"), "{name}: {err}");
                continue;
            }
            // Refused by the depth check, or by the parser's recursion limit
            // (which some constructs report as a syntax error).
            match f.engine.query(&sql).await {
                Err(SqlError::Rejected(text)) => {
                    ensure!(text.contains(" deep"), "{name} at depth {depth}: {text}")
                }
                Err(SqlError::Invalid(_)) => {}
                other => anyhow::bail!("{name} at depth {depth}: {other:?}"),
            }
        }
    }
    // Long chains of conditions and concatenations, as dashboards write
    // them, run up to the limit.
    let ors = (0..MAX_NESTING / 2 - 2)
        .map(|i| format!("payload = '{i}'"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let concat = vec!["topic"; MAX_NESTING - 2].join(" || ");
    for sql in [
        format!("SELECT count(*) FROM events WHERE {ors}"),
        format!("SELECT {concat} AS t FROM events"),
    ] {
        let answer = f.engine.query(&sql).await;
        ensure!(answer.is_ok(), "{sql:.60}: {answer:?}");
    }
    // The longest chains the text limit allows: `1+1+...+1` (32k deep),
    // and unary operators with no brackets for the nesting check to count.
    let chains = [
        format!("SELECT 1{}", "+1".repeat((MAX_SQL_BYTES - 8) / 2)),
        format!("SELECT {}1", "- ".repeat((MAX_SQL_BYTES - 8) / 2)),
        format!("SELECT {}true", "NOT ".repeat((MAX_SQL_BYTES - 12) / 4)),
        format!("SELECT {}", "CAST(".repeat(MAX_SQL_BYTES / 5 - 2)),
    ];
    for sql in chains {
        match f.engine.query(&sql).await {
            Err(SqlError::Rejected(_) | SqlError::Invalid(_)) => {}
            other => anyhow::bail!("{sql:.40}: {other:?}"),
        }
    }
    // Too many relations: unions, joins, WITH definitions.
    let many = MAX_RELATIONS + 1;
    let unions = vec!["SELECT 1"; many + 1].join(" UNION ALL ");
    let joins = format!(
        "SELECT count(*) FROM events e0 {}",
        (1..many)
            .map(|i| format!(" JOIN events e{i} ON true"))
            .collect::<String>()
    );
    let ctes = format!(
        "WITH c0 AS (SELECT 1 AS v) {} SELECT * FROM c{}",
        (1..many)
            .map(|i| format!(", c{i} AS (SELECT v FROM c{})", i - 1))
            .collect::<String>(),
        many - 1
    );
    for sql in [unions, joins, ctes] {
        match f.engine.query(&sql).await {
            Err(SqlError::Rejected(text)) => ensure!(text.contains("relations"), "{text}"),
            other => anyhow::bail!("{sql:.60}: {other:?}"),
        }
    }
    assert_eq!(one_i64(&f.engine, "SELECT 1 + 1").await?, 2);
    Ok(())
}

/// Random statements nested from every kind at once, up to twice the
/// limit: each is answered or refused, and the process survives them.
#[test]
fn randomly_nested_statements_are_answered_or_refused() -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let f = fixture_with(&["name = \"events\""], limits(Duration::from_secs(30)))?;
    let kinds = proptest::collection::vec(0..NESTINGS.len(), 1..2 * MAX_NESTING);
    let mut runner = TestRunner::new(Config {
        cases: 64,
        ..Config::default()
    });
    runner
        .run(&kinds, |kinds| {
            let mut expr = "1".to_owned();
            for kind in kinds {
                expr = (NESTINGS[kind].1)(&expr);
            }
            let sql = format!("SELECT {expr} AS v");
            match runtime.block_on(f.engine.query(&sql)) {
                Ok(_)
                | Err(SqlError::Rejected(_) | SqlError::Invalid(_) | SqlError::Evaluation(_)) => {
                    Ok(())
                }
                Err(other) => Err(TestCaseError::fail(format!("{sql:.80}: {other}"))),
            }
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

#[tokio::test]
async fn functions_that_build_huge_values_fail_under_the_memory_limit() -> Result<()> {
    let f = fixture_with(&["name = \"events\""], limits(Duration::from_secs(30)))?;
    for i in 0..300 {
        publish(&f.broker, "t", format!("{{\"v\":{i}}}")).await?;
    }
    let huge = [
        "SELECT repeat('x', 500000000)",
        "SELECT repeat('x', 2147483647)",
        "SELECT length(repeat(payload, 1000000)) FROM events",
        "SELECT lpad('x', 2147483647)",
        "SELECT rpad('x', 2147483647, 'é')",
        "SELECT array_repeat(1, 1000000000)",
        "SELECT array_repeat(payload, 10000000) FROM events",
        "SELECT cardinality(range(1, 1000000000))",
        "SELECT cardinality(generate_series(-9223372036854775807, 9223372036854775807))",
        "SELECT array_resize([1], 1000000000)",
        "SELECT cardinality(array_resize(make_array('x'), 10000000, repeat('x', 1000000)))",
        "SELECT cardinality(range(TIMESTAMP '1970-01-01', TIMESTAMP '2100-01-01', INTERVAL '1 second'))",
        "SELECT cardinality(generate_series(DATE '1970-01-01', DATE '2100-01-01', INTERVAL '1 minute'))",
        "SELECT replace(repeat('x', 1000000), 'x', repeat('y', 1000))",
        "SELECT regexp_replace(repeat('x', 100000), '', repeat('y', 100000), 'g')",
        "SELECT length(string_agg(repeat(payload, 100000), '')) FROM events",
        "SELECT cardinality(array_agg(repeat(a.payload, 1000))) FROM events a, events b",
        // Constants folded once, then copied into every row.
        "SELECT range(1, 1000000) AS r FROM events",
        "SELECT count(array_append(array_repeat(1, 1000000), length(payload))) FROM events",
        // Billions of rows in column-less batches, collected by the joins.
        "SELECT count(*) FROM events a, events b, events c, events d, events e",
    ];
    for sql in huge {
        match f.engine.query(sql).await {
            Err(SqlError::MemoryLimit { .. }) => {}
            other => anyhow::bail!("{sql}: expected a memory error, got {other:?}"),
        }
    }
    // A refused plan is not cached: the same text is refused again.
    let constant = "SELECT range(1, 1000000) AS r FROM events";
    ensure!(matches!(
        f.engine.query(constant).await,
        Err(SqlError::MemoryLimit { .. })
    ));
    // Within the limit, the same functions still work.
    assert_eq!(
        one_i64(&f.engine, "SELECT length(repeat('ab', 1000))").await?,
        2000
    );
    assert_eq!(
        one_i64(&f.engine, "SELECT cardinality(range(1, 1001))").await?,
        1000
    );
    // A constant string is counted by its length: 5 MB of '-' is fine.
    assert_eq!(
        one_i64(&f.engine, "SELECT length(repeat('-', 5000000))").await?,
        5_000_000
    );
    assert_eq!(
        one_i64(
            &f.engine,
            "SELECT cardinality(range(DATE '2026-01-01', DATE '2027-01-01', INTERVAL '1 day'))"
        )
        .await?,
        365
    );
    Ok(())
}

#[tokio::test]
async fn errors_in_the_data_are_the_users_not_the_servers() -> Result<()> {
    let f = fixture()?;
    for i in 0..3 {
        publish(
            &f.broker,
            "t",
            format!("a payload of some length, number {i}"),
        )
        .await?;
    }
    for sql in [
        "SELECT 1/0",
        "SELECT CAST('abc' AS INT)",
        "SELECT arrow_cast('x', 'Int64')",
        // Quadratic in its input, and a call cannot be interrupted.
        "SELECT levenshtein(repeat(payload, 10000), repeat(payload, 10000)) FROM events",
    ] {
        match f.engine.query(sql).await {
            Err(SqlError::Evaluation(_) | SqlError::Invalid(_)) => {}
            other => anyhow::bail!("{sql}: expected a user error, got {other:?}"),
        }
    }
    Ok(())
}

/// A 5-way cross join that would run for hours, and an unbounded series.
const RUNAWAY: &[&str] = &[
    "SELECT count(*) FROM events a, events b, events c, events d, events e",
    "SELECT sum(value) FROM generate_series(1, 9000000000000000000)",
];

#[tokio::test]
async fn the_timeout_ends_runaway_queries_and_frees_the_executor() -> Result<()> {
    let f = fixture_with(&["name = \"events\""], limits(Duration::from_millis(800)))?;
    for i in 0..300 {
        publish(&f.broker, "t", format!("{i}")).await?;
    }
    for sql in RUNAWAY {
        match f.engine.query(sql).await {
            Err(SqlError::Timeout(_) | SqlError::MemoryLimit { .. }) => {}
            other => anyhow::bail!("{sql}: {other:?}"),
        }
    }
    // The aborted jobs really stop: nothing is left running.
    wait_until_idle(&f).await?;
    assert_eq!(
        one_i64(&f.engine, "SELECT count(*) FROM events").await?,
        300
    );
    Ok(())
}

async fn wait_until_idle(f: &Fixture) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while f.metrics.running.get() != 0 {
        ensure!(
            Instant::now() < deadline,
            "a query kept running after its end"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test]
async fn queries_past_the_queue_are_refused_as_busy_and_shutdown_ends_the_rest() -> Result<()> {
    let f = fixture_with(
        &["name = \"events\""],
        SqlLimits {
            max_concurrent: 1,
            max_queued: 1,
            ..limits(Duration::from_secs(60))
        },
    )?;
    let runaway = |engine: SqlEngine| async move { engine.query(RUNAWAY[1]).await };
    let running = tokio::spawn(runaway(f.engine.clone()));
    let waiting = tokio::spawn(runaway(f.engine.clone()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while f.metrics.running.get() + f.metrics.waiting.get() < 2 {
        ensure!(Instant::now() < deadline, "the two queries never got in");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match f.engine.query("SELECT 1").await {
        Err(e @ SqlError::Busy { .. }) => ensure!(e.to_string().contains("max_queued")),
        other => anyhow::bail!("expected busy, got {other:?}"),
    }
    f.engine.shutdown();
    for task in [running, waiting] {
        match task.await? {
            Err(SqlError::ShuttingDown) => {}
            other => anyhow::bail!("expected shutting down, got {other:?}"),
        }
    }
    ensure!(matches!(
        f.engine.query("SELECT 1").await,
        Err(SqlError::ShuttingDown)
    ));
    Ok(())
}
