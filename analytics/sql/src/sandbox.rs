//! The read-only sandbox's first gate: parse the SQL and let through only
//! a single query (`SELECT`, `WITH`, `VALUES`) or `EXPLAIN` of one. DDL,
//! DML, `COPY`, `CREATE EXTERNAL TABLE`, `SET` and every other statement
//! are refused here; [`crate::engine`] then checks the plan with
//! DataFusion's `SQLOptions`. No function or table in the session reads
//! files: URL tables are off and no file-reading table function is
//! registered.

use datafusion::sql::parser::{DFParserBuilder, Statement};
use datafusion::sql::sqlparser::ast::Statement as Ast;

use crate::error::SqlError;

/// Parses `sql` into one statement that only reads.
pub fn parse(sql: &str) -> Result<Statement, SqlError> {
    let mut statements = DFParserBuilder::new(sql)
        .build()
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| SqlError::Invalid(e.strip_backtrace()))?;
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

fn rejected(what: &str) -> SqlError {
    SqlError::Rejected(format!(
        "{what}: SQL here is read-only; only SELECT, WITH, VALUES and EXPLAIN run"
    ))
}
