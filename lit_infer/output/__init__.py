"""What a run leaves on disk, without Lightning: one part per unit of work, committed with its record (size, SHA-256,
rows), the manifest of a finished run, the one verified merge of the parts into one ordered file, and the gathering
of parts to rank 0 when ranks share no filesystem."""
