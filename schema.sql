-- berth's SQLite schema, as numbered migrations. Each "-- migration: N" section
-- runs once, in order, when PRAGMA user_version is below N. Never edit a
-- migration that has shipped; add the next one.

-- migration: 1
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE TABLE crews (
    id                INTEGER PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE COLLATE NOCASE,
    default_redaction TEXT NOT NULL DEFAULT 'standard'
                      CHECK (default_redaction IN ('standard', 'strict')),
    created_at        TEXT NOT NULL
);

CREATE TABLE memberships (
    crew_id    INTEGER NOT NULL REFERENCES crews(id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role       TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    created_at TEXT NOT NULL,
    PRIMARY KEY (crew_id, user_id)
);
CREATE INDEX memberships_by_user ON memberships(user_id);

CREATE TABLE tokens (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    crew_id      INTEGER NOT NULL REFERENCES crews(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    secret_hash  BLOB NOT NULL,            -- SHA-256 of the secret; the secret is never stored
    scopes       TEXT NOT NULL,            -- JSON array of scope names
    redaction    TEXT NOT NULL DEFAULT 'inherit'
                 CHECK (redaction IN ('inherit', 'standard', 'strict')),
    region       TEXT,
    server       TEXT,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    last_used_ip TEXT,
    recent_ips   TEXT NOT NULL DEFAULT '[]', -- JSON array, the last 5 distinct addresses
    expires_at   TEXT,
    revoked_at   TEXT
);
CREATE INDEX tokens_by_crew ON tokens(crew_id);
-- An active token's name is unique for its user in its crew, so names can address tokens.
CREATE UNIQUE INDEX tokens_active_name ON tokens(user_id, crew_id, name) WHERE revoked_at IS NULL;

CREATE TABLE sessions (
    id_hash    BLOB PRIMARY KEY,           -- SHA-256 of the session id in the cookie
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);

CREATE TABLE audit (
    id         INTEGER PRIMARY KEY,
    at         TEXT NOT NULL,
    crew_id    INTEGER REFERENCES crews(id) ON DELETE SET NULL,
    user_id    INTEGER REFERENCES users(id) ON DELETE SET NULL,
    username   TEXT,                       -- kept as written, also for unknown names
    token_id   INTEGER,
    action     TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT '',
    address    TEXT
);
CREATE INDEX audit_by_crew ON audit(crew_id, id);

-- migration: 2
-- Tunnel history: one row per tunnel opened; closed_at is null while it is live.
CREATE TABLE tunnels (
    id         TEXT PRIMARY KEY,           -- the relay's tunnel id (hex), as in the `ready` frame
    crew_id    INTEGER NOT NULL REFERENCES crews(id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_id   INTEGER NOT NULL REFERENCES tokens(id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('http', 'tcp')),
    subdomain  TEXT NOT NULL,
    url        TEXT NOT NULL,
    opened_at  TEXT NOT NULL,
    closed_at  TEXT
);
CREATE INDEX tunnels_by_crew ON tunnels(crew_id, opened_at);

-- migration: 3
-- Inspector records of HTTP tunnels, redacted before they are written; the
-- writer keeps the newest --inspect-retention per tunnel. Bodies are never stored.
CREATE TABLE requests (
    id               INTEGER PRIMARY KEY,  -- increasing: pages go newest first by id
    tunnel_id        TEXT NOT NULL REFERENCES tunnels(id) ON DELETE CASCADE,
    at               TEXT NOT NULL,
    method           TEXT NOT NULL,
    path             TEXT NOT NULL,        -- with query; strict redacts sensitive values
    status           INTEGER NOT NULL,
    duration_ms      INTEGER NOT NULL,
    bytes_in         INTEGER NOT NULL,
    bytes_out        INTEGER NOT NULL,
    request_headers  TEXT NOT NULL,        -- JSON [[name, value], ...], redacted
    response_headers TEXT NOT NULL
);
CREATE INDEX requests_by_tunnel ON requests(tunnel_id, id);
-- Requests recorded through a tunnel since it opened (retention keeps fewer rows).
ALTER TABLE tunnels ADD COLUMN request_count INTEGER NOT NULL DEFAULT 0;

-- migration: 4
-- A crew's own limits on live tunnels, each at most the server's (null: the server's).
ALTER TABLE crews ADD COLUMN max_tunnels_per_user INTEGER;
ALTER TABLE crews ADD COLUMN max_tunnels INTEGER;
ALTER TABLE crews ADD COLUMN max_tcp_ports_per_user INTEGER;
ALTER TABLE crews ADD COLUMN max_tcp_ports INTEGER;
-- Pruning closed tunnels' history by age.
CREATE INDEX tunnels_by_closed ON tunnels(closed_at) WHERE closed_at IS NOT NULL;

-- migration: 5
-- Subdomains a crew holds: the ones it reserved, and the ones it used, kept
-- for --subdomain-hold after its last tunnel on them closed, so no other crew
-- takes a name during a reconnect or after a restart and gets its visitors.
CREATE TABLE subdomains (
    name       TEXT PRIMARY KEY,
    crew_id    INTEGER NOT NULL REFERENCES crews(id) ON DELETE CASCADE,
    reserved   INTEGER NOT NULL DEFAULT 0 CHECK (reserved IN (0, 1)),
    live       INTEGER NOT NULL DEFAULT 0 CHECK (live IN (0, 1)),  -- a tunnel of the crew is on it
    held_until TEXT,                           -- set when its last tunnel closed
    created_at TEXT NOT NULL
);
CREATE INDEX subdomains_by_crew ON subdomains(crew_id);
