//! The read-only sandbox's first gate: parse the SQL and let through only
//! a single query (`SELECT`, `WITH`, `VALUES`) or `EXPLAIN` of one. DDL,
//! DML, `COPY`, `CREATE EXTERNAL TABLE`, `SET` and every other statement
//! are refused here; [`crate::engine`] then checks the plan with
//! DataFusion's `SQLOptions`. No function or table in the session reads
//! files: URL tables are off and no file-reading table function is
//! registered.
//!
//! It also keeps what reaches the parser and planner small enough to
//! handle: the text is at most [`MAX_SQL_BYTES`], brackets nest at most
//! [`MAX_BRACKET_DEPTH`] deep, subqueries [`MAX_QUERY_NESTING`] deep and
//! expressions [`MAX_NESTING`] deep (`1+1+...+1` is nested as deep as it
//! is long), and a query joins, unions or defines at most
//! [`MAX_RELATIONS`] relations.
//! Planning is recursive, so without these one request could overflow the
//! stack and abort the process.

use std::ops::ControlFlow;

use datafusion::error::DataFusionError;
use datafusion::sql::parser::{DFParserBuilder, Statement};
use datafusion::sql::sqlparser::ast::{Expr, Query, SetExpr, Statement as Ast, Visit, Visitor};
use datafusion::sql::sqlparser::parser::ParserError;

use crate::error::SqlError;

/// Longest SQL text accepted.
pub const MAX_SQL_BYTES: usize = 64 * 1024;
/// Deepest nesting of expressions and subqueries, counted together.
pub const MAX_NESTING: usize = 100;
/// Deepest nesting of brackets and `CASE ... END`, read from the text.
/// DataFusion's simplifier copies some arguments (`coalesce` becomes a
/// `CASE` that names its first argument twice), so planning time doubles
/// with each such level: 16 take half a second, 25 several minutes, and
/// planning cannot be interrupted.
pub const MAX_BRACKET_DEPTH: usize = 16;
/// Deepest nesting of queries (subqueries in subqueries). DataFusion's
/// planning time doubles with each level of nested scalar subqueries too.
pub const MAX_QUERY_NESTING: usize = 8;
/// Most relations one query may name: `FROM` items and joins, `UNION`,
/// `INTERSECT` and `EXCEPT` branches, and `WITH` definitions.
pub const MAX_RELATIONS: usize = 64;
/// How deep the parser itself may recurse. Well above what
/// [`MAX_BRACKET_DEPTH`] brackets need: sqlparser backtracks over some constructs
/// (`CAST`), and one that reaches the limit inside them is retried so often
/// that a 2 KB statement keeps a thread for hours. The bracket check
/// ([`bracket_depth`]) keeps parsing far from the limit; the limit still
/// stops unbracketed chains such as `- - - 1` or `NOT NOT x`.
const PARSER_RECURSION_LIMIT: usize = 4 * MAX_NESTING;

/// Parses `sql` into one statement that only reads.
pub fn parse(sql: &str) -> Result<Statement, SqlError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(SqlError::Rejected(format!(
            "the SQL text is {} bytes, over the limit of {MAX_SQL_BYTES}",
            sql.len()
        )));
    }
    let brackets = bracket_depth(sql);
    if brackets > MAX_BRACKET_DEPTH {
        return Err(SqlError::Rejected(format!(
            "the query nests brackets or CASE {brackets} deep; at most {MAX_BRACKET_DEPTH} \
             are allowed"
        )));
    }
    let mut statements = DFParserBuilder::new(sql)
        .with_recursion_limit(PARSER_RECURSION_LIMIT)
        .build()
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| match e {
            DataFusionError::SQL(parser, _)
                if matches!(*parser, ParserError::RecursionLimitExceeded) =>
            {
                too_deep()
            }
            other => SqlError::Invalid(other.strip_backtrace()),
        })?;
    if statements.len() != 1 {
        return Err(SqlError::Rejected(format!(
            "send exactly one statement, not {}",
            statements.len()
        )));
    }
    let statement = statements
        .pop_front()
        .ok_or_else(|| SqlError::Invalid("empty".into()))?;
    check(&statement)?;
    Ok(statement)
}

fn check(statement: &Statement) -> Result<(), SqlError> {
    match statement {
        Statement::Statement(ast) => check_ast(ast),
        Statement::Explain(explain) => check(&explain.statement),
        Statement::CreateExternalTable(_) => Err(rejected("CREATE EXTERNAL TABLE")),
        Statement::CopyTo(_) => Err(rejected("COPY")),
        Statement::Reset(_) => Err(rejected("RESET")),
    }
}

fn check_ast(ast: &Ast) -> Result<(), SqlError> {
    // First, so nothing below (printing a refused statement included)
    // recurses through a deep tree.
    if let ControlFlow::Break(refusal) = ast.visit(&mut Nesting::default()) {
        return Err(refusal);
    }
    match ast {
        Ast::Query(_) => Ok(()),
        Ast::Explain { statement, .. } => check_ast(statement),
        other => {
            let text = other.to_string();
            let verb: String = text
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            Err(rejected(&verb))
        }
    }
}

fn too_deep() -> SqlError {
    SqlError::Rejected(format!(
        "the query nests expressions and subqueries more than {MAX_NESTING} deep"
    ))
}

fn rejected(what: &str) -> SqlError {
    SqlError::Rejected(format!(
        "{what}: SQL here is read-only; only SELECT, WITH, VALUES and EXPLAIN run"
    ))
}

/// How deep brackets (`(`, `[`) and `CASE ... END` nest in `sql`, outside
/// string literals, quoted identifiers and comments. Read from the text,
/// before the parser sees it.
pub fn bracket_depth(sql: &str) -> usize {
    let bytes = sql.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    // The index just past the first `end` at or after `from`.
    let past = |end: &[u8], from: usize| {
        bytes[from.min(bytes.len())..]
            .windows(end.len())
            .position(|w| w == end)
            .map_or(bytes.len(), |p| from + p + end.len())
    };
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"' | b'`') => {
                // A doubled quote inside is an escaped quote: scanning on
                // from the closing one reads it as a new (empty) literal.
                i = past(&[quote], i + 1);
                continue;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = past(b"\n", i + 2);
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = past(b"*/", i + 2);
                continue;
            }
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth = depth.saturating_sub(1),
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let word = &bytes[start..i];
                if word.eq_ignore_ascii_case(b"case") {
                    depth += 1;
                } else if word.eq_ignore_ascii_case(b"end") {
                    depth = depth.saturating_sub(1);
                }
                deepest = deepest.max(depth);
                continue;
            }
            _ => {}
        }
        deepest = deepest.max(depth);
        i += 1;
    }
    deepest
}

/// Walks a query and stops at the first place it is too deep or too wide.
#[derive(Default)]
struct Nesting {
    depth: usize,
    queries: usize,
}

impl Nesting {
    fn enter(&mut self) -> ControlFlow<SqlError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return ControlFlow::Break(too_deep());
        }
        ControlFlow::Continue(())
    }

    fn leave(&mut self) -> ControlFlow<SqlError> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

impl Visitor for Nesting {
    type Break = SqlError;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<SqlError> {
        let relations = relations(query);
        if relations > MAX_RELATIONS {
            return ControlFlow::Break(SqlError::Rejected(format!(
                "the query names {relations} relations (FROM items, joins, set operations \
                 and WITH definitions); at most {MAX_RELATIONS} are allowed"
            )));
        }
        self.queries += 1;
        if self.queries > MAX_QUERY_NESTING {
            return ControlFlow::Break(SqlError::Rejected(format!(
                "the query nests subqueries more than {MAX_QUERY_NESTING} deep"
            )));
        }
        self.enter()
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<SqlError> {
        self.queries -= 1;
        self.leave()
    }

    fn pre_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<SqlError> {
        self.enter()
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<SqlError> {
        self.leave()
    }
}

/// Relations one query level names. Set operations nest to the left
/// without a `Query` between them, so they are counted here, by a loop.
fn relations(query: &Query) -> usize {
    let mut count = query.with.as_ref().map_or(0, |with| with.cte_tables.len());
    let mut pending = vec![query.body.as_ref()];
    while let Some(body) = pending.pop() {
        if count > MAX_RELATIONS {
            break;
        }
        match body {
            SetExpr::SetOperation { left, right, .. } => {
                count += 1;
                pending.push(left);
                pending.push(right);
            }
            SetExpr::Select(select) => {
                count += select
                    .from
                    .iter()
                    .map(|table| 1 + table.joins.len())
                    .sum::<usize>();
            }
            _ => {}
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bracket_depth_skips_literals_identifiers_and_comments() {
        let cases = [
            ("SELECT 1", 0),
            ("SELECT ((1))", 2),
            ("SELECT a[1][2] FROM t", 1),
            ("SELECT CASE WHEN x THEN (CASE WHEN y THEN 1 END) END", 3),
            ("SELECT '((((' , \"((\"\"((\" FROM t", 0),
            ("SELECT 'it''s (' || (x)", 1),
            ("SELECT 1 -- ((((\n + (2)", 1),
            ("SELECT /* (((( */ (1)", 1),
            ("SELECT \"case\" FROM t", 0),
            ("SELECT endpoint, casework FROM t", 0),
            ("SELECT ((1", 2),
            ("SELECT )))((", 2),
        ];
        for (sql, depth) in cases {
            assert_eq!(bracket_depth(sql), depth, "{sql}");
        }
    }

    #[test]
    fn deep_brackets_are_refused_before_parsing() {
        let cast = |n| format!("SELECT {}1{}", "CAST(".repeat(n), " AS INT)".repeat(n));
        parse(&cast(MAX_BRACKET_DEPTH)).expect("at the limit");
        match parse(&cast(MAX_BRACKET_DEPTH + 1)) {
            Err(SqlError::Rejected(text)) => assert!(text.contains("brackets"), "{text}"),
            other => panic!("{other:?}"),
        }
    }
}
