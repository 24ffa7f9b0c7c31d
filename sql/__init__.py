"""The SQL files, one statement per relation (sql/<relation>.sql), shipped with the package as
data; models/sql.py reads them through importlib.resources."""
