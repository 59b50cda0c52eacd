"""Cinder volume driver for the test bed: no disk, every call succeeds.

It is Cinder's own FakeLoggingVolumeDriver (python3-cinder ships it as cinder/tests/fake_driver.py)
plus what that driver lacks for the project's tests:
- extend: the fake driver's FakeBrickLVM has no extend_volume, so an extend ends in error_extending;
- multiattach: the scheduler matches a volume type's multiattach='<is> True' against the pool's
  reported capability, and the fake driver does not report it.
"""

from cinder.tests import fake_driver


class TestbedFakeDriver(fake_driver.FakeLoggingVolumeDriver):
    def extend_volume(self, volume, new_size):
        """Nothing stored, nothing to grow."""

    def revert_to_snapshot(self, context, volume, snapshot):
        """Nothing stored, nothing to revert."""

    def copy_volume_data(self, context, src_vol, dest_vol, remote=None):
        """No data to copy."""

    def _update_volume_stats(self):
        super()._update_volume_stats()
        for pool in self._stats["pools"]:
            pool["multiattach"] = True
