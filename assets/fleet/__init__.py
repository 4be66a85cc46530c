"""Fleet assets: the lakehouse schema and the fleet's status."""
