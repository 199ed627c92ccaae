"""What every layer may import: errors, atomic file writes, constants, progress, worker pools,
the safe unpickler, class lists and the HTML page kit. Imports nothing else from segx."""
