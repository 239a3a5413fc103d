//! For the benchmarks that make their own PostgreSQL database: runs one
//! statement (`CREATE DATABASE`, `DROP DATABASE`) on the server's
//! `postgres` database.

/// Runs `statement` on `server`'s `postgres` database, without TLS.
pub async fn admin(server: &str, statement: &str) -> anyhow::Result<()> {
    let (client, connection) =
        tokio_postgres::connect(&format!("{server}/postgres"), tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    client.batch_execute(statement).await?;
    drop(client);
    let _ = connection.await;
    Ok(())
}
