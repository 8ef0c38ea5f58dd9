"""The versioned, content-addressed, resumable teacher-score store."""
