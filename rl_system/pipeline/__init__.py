"""Pipeline drivers: each is one readable loop over worker-group calls."""
