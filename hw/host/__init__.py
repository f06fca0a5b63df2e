"""Host link gateware: byte stream <-> frames <-> commands, CSRs (see :mod:`hw.host.link`)."""
