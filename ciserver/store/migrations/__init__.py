"""Alembic's scripts for the store's schema: env.py and one module per revision under versions/.

A change to the models needs a revision, or tests/test_store_upgrade.py fails: write it from
Alembic's comparison of the models with a database the migrations made (not create_all), e.g.
    python -c 'from alembic import command; from sqlalchemy import create_engine;
    from ciserver.store.schema import alembic_config; c = create_engine("sqlite:///n.db").connect();
    command.upgrade(alembic_config(c), "head"); c.commit();
    command.revision(alembic_config(c), "what changed", autogenerate=True)'
then review it (SQLite alters tables in batch mode; PostgreSQL must run it too).
"""
