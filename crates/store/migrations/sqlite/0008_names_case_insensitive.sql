-- User, group and target names are unique without regard to case: `ADMIN` next to `admin`
-- would read as the same principal in logs, policies and approvals. Identical in both dialects.
CREATE UNIQUE INDEX users_name_nocase ON users (lower(name));
CREATE UNIQUE INDEX groups_name_nocase ON groups (lower(name));
CREATE UNIQUE INDEX targets_name_nocase ON targets (lower(name));
