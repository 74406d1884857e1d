-- Server admins (the admin API, register_new_matrix_user's --admin), a projection of the
-- accounts stream.
ALTER TABLE users ADD COLUMN admin BOOLEAN NOT NULL DEFAULT false;
