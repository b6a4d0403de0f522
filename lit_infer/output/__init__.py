"""What a run leaves on disk, without Lightning: per-rank shards committed per batch, their merge into one ordered
file in a chosen format, and the gathering of shards to rank 0 when ranks share no filesystem."""
