-- Where a user's mail notifications go (NULL: none). Identical in both dialects.
ALTER TABLE users ADD COLUMN email TEXT;
