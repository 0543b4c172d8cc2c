"""SQL files of the collector: migrations and named queries (installed as ``collector.sql``)."""
