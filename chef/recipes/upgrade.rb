# flotilla::upgrade — on demand, one node at a time (e.g. `knife ssh 'role:flotilla-shared'
# 'sudo chef-client -o recipe[flotilla::upgrade]' --concurrency 1`): installs the pinned version
# and has runner_upgrade.sh drain the running manager (SIGQUIT, wait for its jobs), then start
# it on the new binary.
#
# No deadlock with the chef-client run that runs this recipe: runner_upgrade.sh is told to
# suspend only the chef-client *timer* (stopping chef-client.service would kill this very run),
# and its config-management step is the package or binary install itself, not a nested
# chef-client (which would wait forever on this run's lock).
include_recipe 'flotilla::install'

attrs = node['flotilla']
marker = '/run/flotilla-upgrade.chef-timer'
swap =
  if attrs['install_method'] == 'binary'
    "test -x #{attrs['binary_path']}" # remote_file in flotilla::install already swapped it
  elsif attrs['package_source']
    "dpkg -i /var/cache/flotilla/#{attrs['package_name']}_#{attrs['package_version']}_amd64.deb"
  else
    "apt-get install -y #{attrs['package_name']}=#{attrs['package_version']}"
  end
swap = "dpkg -i #{attrs['package_source']}" if attrs['install_method'] == 'package' && attrs['package_source'].to_s.start_with?('/')

# The running manager is stale when its executable was replaced on disk (the kernel then shows
# "(deleted)" after the path): the package or binary changed under it.
stale = "pid=$(systemctl show --property MainPID --value flotilla) && [ \"${pid:-0}\" != 0 ] && readlink /proc/$pid/exe | grep -q '(deleted)'"

execute 'flotilla drain and upgrade' do
  command "#{attrs['upgrade_script']} update"
  environment(
    'FLOTILLA_SERVICE' => 'flotilla',
    'FLOTILLA_CM_SUSPEND' => "if systemctl is-active --quiet chef-client.timer; then systemctl stop chef-client.timer && touch #{marker}; fi",
    'FLOTILLA_CM_RESUME' => "if [ -e #{marker} ]; then rm -f #{marker}; systemctl start chef-client.timer; fi",
    'FLOTILLA_CM_COMMAND' => swap
  )
  live_stream true
  timeout 8 * 3600
  only_if stale
end
