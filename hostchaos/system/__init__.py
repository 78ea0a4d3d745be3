"""The only code that touches the OS. Everything here turns OS errors into hostchaos errors."""

from hostchaos.system import pyroute2_package

pyroute2_package.install()
