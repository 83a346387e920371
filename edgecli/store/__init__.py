"""The event store: every request, task and log line of every `edgecli serve`, in one SQLite file.

- `schema`: the file, its `events` table and indexes, opening it to write or to read;
- `writer`: the store process each serve runs (read the pipe → one INSERT per batch → commit);
- `feed`: serve's side, which sends each event's row down that process's pipe;
- `reader`: the queries `logs`, `tasks` and `invoke --wait` run.

Nothing is imported here: the store process loads only what it needs.
"""
