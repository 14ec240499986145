# Default attributes of the flotilla cookbook. The README's attributes table explains each one.

# The release to run. The package version is the Debian one cargo-deb writes (<version>-1).
default['flotilla']['version'] = '0.1.0'

# How the binary arrives: 'package' (the .deb, by name and version, from the node's apt
# sources, or from `package_source` when set: a local path or an https URL of the .deb file) or
# 'binary' (a release binary downloaded from `binary_url`, checked against `binary_sha256`).
default['flotilla']['install_method'] = 'package'
default['flotilla']['package_name'] = 'flotilla'
default['flotilla']['package_version'] = "#{node['flotilla']['version']}-1"
default['flotilla']['package_source'] = nil
default['flotilla']['package_sha256'] = nil
default['flotilla']['binary_url'] = nil
default['flotilla']['binary_sha256'] = nil
default['flotilla']['binary_path'] = '/usr/bin/flotilla'

# The service user (the unit's User=): owns config.toml (the manager rewrites it when it rotates
# a runner token) and state_dir.
default['flotilla']['user'] = 'flotilla'
default['flotilla']['group'] = 'flotilla'
# Supplementary groups of the user, e.g. ['docker'] for runners on the local Docker engine.
default['flotilla']['user_groups'] = []

default['flotilla']['config_path'] = '/etc/flotilla/config.toml'
# Where flotilla_runner keeps what `flotilla register` wrote (one 0400 file per runner).
default['flotilla']['registered_dir'] = '/etc/flotilla/registered'
default['flotilla']['upgrade_script'] = '/usr/local/sbin/runner_upgrade.sh'

# The helper image every docker runner uses unless its `docker` hash names one.
default['flotilla']['helper_image'] = "flotilla-helper:#{node['flotilla']['version']}"
# Its `docker save` tarball (scripts/build-helper-image.sh --save), downloaded to
# `helper_image_archive` and checked against the sha256 when the URL is set; every docker runner
# then gets `helper_image_archive`, and the manager loads the image onto each new VM itself.
default['flotilla']['helper_image_archive_url'] = nil
default['flotilla']['helper_image_archive_sha256'] = nil
default['flotilla']['helper_image_archive'] = "/var/lib/flotilla/flotilla-helper-#{node['flotilla']['version']}.tar"

# config.toml's global keys, rendered in this order (nil drops a key).
default['flotilla']['config']['concurrent'] = 10
default['flotilla']['config']['check_interval'] = 3
default['flotilla']['config']['shutdown_timeout'] = 30
default['flotilla']['config']['listen_address'] = '127.0.0.1:9252'
default['flotilla']['config']['log_level'] = 'info'
default['flotilla']['config']['log_format'] = 'json'
default['flotilla']['config']['state_dir'] = '/var/lib/flotilla'

# One hash per [[runners]] entry, with nested hashes `docker`, `machine` (GitLab Runner's
# spelling: IdleCount, IdleTime, MaxBuilds, MaxGrowthRate, `autoscaling` as a list of hashes),
# `gce` and `cache`. A runner without `token` takes node.run_state['flotilla_tokens'][name]
# (from a vault), else the one flotilla_runner registered. The default: one runner on the local
# Docker engine (add 'docker' to user_groups); a role's list replaces it whole.
default['flotilla']['runners'] = [
  {
    'name' => 'flotilla',
    'url' => 'https://gitlab.com/',
    'executor' => 'docker',
    'docker' => { 'image' => 'alpine:latest' }
  }
]
