"""The archiver: fills the event store from the ``events`` stream (consumer group,
at least once, upsert by ``event_id``) and applies media retention."""
