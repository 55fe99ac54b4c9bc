"""Project store: SQLAlchemy schema, migrations, project folders and mask encoding. No Qt here."""
