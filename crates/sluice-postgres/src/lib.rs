//! PostgreSQL for sluice. A table or a query of a database is read as a DataFusion table:
//! the columns, filters and limit a statement needs are sent to the server, and the rows
//! come back by binary COPY. A model's output is published into a table: copied into a
//! staging table beside it, checked there, then put in place by one transaction, so readers
//! see the old rows or the new, never a part.

mod connect;
mod copy_out;
mod filters;
mod table;
mod target;
mod types;

pub use connect::{Database, PgError};
pub use table::{PostgresTable, Relation};
pub use target::{erase, row_count, Erased, Publish, Publishing, Staging, TableName, Written};
