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
use datafusion::sql::sqlparser::ast::{
    Expr, Query, SelectItem, SetExpr, Statement as Ast, Visit, Visitor,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::SqlError;

/// Longest SQL text accepted.
pub const MAX_SQL_BYTES: usize = 64 * 1024;
/// Deepest nesting of expressions and subqueries, counted together. A
/// chain `a OR b OR ...` or `a || b || ...` nests as deep as it is long;
/// the executor's stacks plan 400 levels with room to spare.
pub const MAX_NESTING: usize = 400;
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
    let brackets = bracket_depth(sql)?;
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

/// Parses `text` as one SQL expression, under the same limits as a query,
/// and gives it back in canonical form (comments gone, brackets balanced),
/// ready to be placed inside SQL that tidewire writes. Anything that is
/// not a single expression (a second clause, `ts) OR (true`) is refused.
pub fn parse_expression(text: &str) -> Result<String, SqlError> {
    let statement = parse(&format!("SELECT {text}"))?;
    let not_one = || SqlError::Invalid(format!("{text:?} is not one SQL expression"));
    let Statement::Statement(ast) = &statement else {
        return Err(not_one());
    };
    let Ast::Query(query) = ast.as_ref() else {
        return Err(not_one());
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(not_one());
    };
    let [SelectItem::UnnamedExpr(expr)] = select.projection.as_slice() else {
        return Err(not_one());
    };
    let canonical = expr.to_string();
    // The whole statement printed is `SELECT <expr>` only when nothing
    // else (FROM, WHERE, ORDER BY, ...) came with it.
    if ast.to_string() != format!("SELECT {canonical}") {
        return Err(not_one());
    }
    Ok(canonical)
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

/// How deep brackets (`(`, `[`, `{`) and `CASE ... END` nest in `sql`,
/// counted over the tokens of the dialect the parser uses, so string
/// literals of every form, quoted identifiers and comments do not count.
/// The tokenizer works in one pass without recursion.
pub fn bracket_depth(sql: &str) -> Result<usize, SqlError> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| SqlError::Invalid(e.to_string()))?;
    let (mut depth, mut deepest) = (0usize, 0usize);
    for token in &tokens {
        match token {
            Token::LParen | Token::LBracket | Token::LBrace => depth += 1,
            Token::RParen | Token::RBracket | Token::RBrace => depth = depth.saturating_sub(1),
            Token::Word(word) if word.keyword == Keyword::CASE => depth += 1,
            Token::Word(word) if word.keyword == Keyword::END => {
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        deepest = deepest.max(depth);
    }
    Ok(deepest)
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
            ("SELECT $$'$$, ((1)), $$'$$", 2),
            ("SELECT E'\\'((', (1)", 1),
            ("SELECT /* /* */ ((( */ (1)", 1),
            ("SELECT {'a': (1)}", 2),
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
            assert_eq!(bracket_depth(sql).expect(sql), depth, "{sql}");
        }
    }

    #[test]
    fn an_expression_is_one_expression_in_canonical_form() {
        assert_eq!(
            parse_expression("to_timestamp_millis(json_get_int(payload, 't')) -- when")
                .expect("ok"),
            "to_timestamp_millis(json_get_int(payload, 't'))"
        );
        for bad in [
            "ts) OR (true",
            "ts FROM events",
            "ts, ts",
            "ts WHERE true",
            "1; DROP TABLE events",
            "",
        ] {
            assert!(parse_expression(bad).is_err(), "{bad}");
        }
        let deep = format!("ts{}", " + 0".repeat(20_000));
        assert!(matches!(
            parse_expression(&deep),
            Err(SqlError::Rejected(_))
        ));
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
