"""VGW health checking: deduplicated, sharded active checks that publish backend up/down."""
