-- Deactivated accounts (POST /account/deactivate), a projection of the accounts stream:
-- the user ID stays taken, the password and devices are gone.
ALTER TABLE users ADD COLUMN deactivated BOOLEAN NOT NULL DEFAULT false;
