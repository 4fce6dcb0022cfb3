"""Lab emulators: the Front End, the partner Edge, the public IM provider and a user agent."""
