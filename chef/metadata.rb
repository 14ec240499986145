# The flotilla cookbook: installs Flotilla (an autoscaling GitLab CI runner manager), writes its
# config.toml, runs it under systemd, registers runners, and upgrades it after a drain.
name 'flotilla'
maintainer 'Flotilla'
maintainer_email 'flotilla@example.com'
license 'MIT'
description 'Installs, configures and upgrades the Flotilla runner manager'
version '0.1.0'
chef_version '>= 16.0'
supports 'debian', '>= 12.0'
supports 'ubuntu', '>= 22.04'
