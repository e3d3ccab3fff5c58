"""The guard against steering that removes protected behaviour: protected directions, the dose check, the audit."""
