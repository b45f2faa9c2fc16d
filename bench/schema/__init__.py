"""The ground layer: types the run, telemetry and analysis layers all share. It imports
nothing of the project above it."""
