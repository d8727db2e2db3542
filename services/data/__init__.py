"""Data: the domain models (securities, pricing packs, lots, portfolios), optimizer policies and
their resolution from templates, the store (SQLAlchemy Core over SQLite or PostgreSQL), the CSV
importers and the loading of shipped seed files. The bottom room: it imports only
``services.errors``, never another room.
"""
