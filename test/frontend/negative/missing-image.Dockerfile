FROM nothere:1
