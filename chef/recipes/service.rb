# flotilla::service — the systemd unit (rendered from the same content as the repository's
# scripts/flotilla.service, with ExecStart and ReadWritePaths from the attributes), enabled and
# started. A changed unit is only reloaded into systemd (daemon-reload); it takes effect at the
# next start, which runner_upgrade.sh does after a drain.
attrs = node['flotilla']
state_dir = attrs['config']['state_dir'] || '/var/lib/flotilla'

template '/etc/systemd/system/flotilla.service' do
  source 'flotilla.service.erb'
  owner 'root'
  group 'root'
  mode '0644'
  variables(
    binary_path: attrs['binary_path'],
    config_path: attrs['config_path'],
    config_dir: ::File.dirname(attrs['config_path']),
    state_dir: state_dir,
    user: attrs['user'],
    group: attrs['group']
  )
  notifies :run, 'execute[flotilla systemd daemon-reload]', :immediately
end

execute 'flotilla systemd daemon-reload' do
  command 'systemctl daemon-reload'
  action :nothing
end

service 'flotilla' do
  supports status: true, reload: true
  action %i[enable start]
end
