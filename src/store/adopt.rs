use sqlx::PgPool;

/// Adoption of a database made by the original backend (filled in by the adoption work).
pub async fn adopt_original_schema(_pool: &PgPool) -> anyhow::Result<()> {
    Ok(())
}
