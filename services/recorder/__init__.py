"""The recorder: H.264 MP4 segments per camera (sharded like the detector), modes
continuous / events (pre- and post-roll) / off, written to the media store and
indexed in the event store."""
