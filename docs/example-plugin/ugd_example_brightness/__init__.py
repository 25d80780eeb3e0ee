"""An example ugd plugin: steer the mean brightness of generated images."""
