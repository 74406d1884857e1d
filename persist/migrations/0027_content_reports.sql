-- Users' reports of rooms and events (POST /rooms/{id}/report[/{eventId}]), for the
-- admin API's event reports; a projection of the accounts stream, each report's ID its
-- position there.
CREATE TABLE content_reports (
	id          BIGINT PRIMARY KEY,
	received_at TIMESTAMPTZ NOT NULL,
	reporter    TEXT NOT NULL,
	room_id     TEXT NOT NULL,
	event_id    TEXT,
	reason      TEXT,
	score       INT
);
CREATE INDEX content_reports_events ON content_reports (id) WHERE event_id IS NOT NULL;
