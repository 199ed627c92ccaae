"""The applications: the command line, the weights command, the demo, the docs generator and the
prediction server. Only here may code read ``sys.argv`` or end the process."""
