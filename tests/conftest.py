"""Shared fixtures. AWS is always moto; time is always a FakeClock unless a test says otherwise."""

from __future__ import annotations

from local.offline import use_in_process_aws

use_in_process_aws()
