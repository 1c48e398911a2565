"""The local stack: process supervision and the services `flywheel up` starts."""
