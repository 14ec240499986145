# flotilla::install — the service user, its directories, the pinned package or binary, and
# runner_upgrade.sh. Nothing here notifies the service: a new version is installed beside the
# running manager (which keeps running the old binary) and starts after the next drain
# (flotilla::upgrade or runner_upgrade.sh).
attrs = node['flotilla']
config_dir = ::File.dirname(attrs['config_path'])
state_dir = attrs['config']['state_dir'] || '/var/lib/flotilla'

group attrs['group'] do
  system true
end

user attrs['user'] do
  system true
  gid attrs['group']
  home state_dir
  shell '/usr/sbin/nologin'
  manage_home false
end

attrs['user_groups'].each do |extra|
  group extra do
    members [attrs['user']]
    append true
    action :manage
  end
end

# The config directory is the user's: the manager replaces config.toml atomically (a temporary
# file and a rename) when it rotates a runner token.
directory config_dir do
  owner attrs['user']
  group attrs['group']
  mode '0700'
end

directory attrs['registered_dir'] do
  owner 'root'
  group 'root'
  mode '0700'
end

directory state_dir do
  owner attrs['user']
  group attrs['group']
  mode '0700'
  recursive true
end

case attrs['install_method']
when 'package'
  if attrs['package_source']
    local_deb = "/var/cache/flotilla/#{attrs['package_name']}_#{attrs['package_version']}_amd64.deb"
    directory '/var/cache/flotilla' do
      mode '0755'
    end
    if attrs['package_source'].start_with?('/')
      local_deb = attrs['package_source']
    else
      remote_file local_deb do
        source attrs['package_source']
        checksum attrs['package_sha256'] if attrs['package_sha256']
        mode '0644'
      end
    end
    dpkg_package attrs['package_name'] do
      source local_deb
      version attrs['package_version']
    end
  else
    package attrs['package_name'] do
      version attrs['package_version']
    end
  end
when 'binary'
  raise 'flotilla: install_method binary needs binary_url and binary_sha256' unless attrs['binary_url'] && attrs['binary_sha256']

  remote_file attrs['binary_path'] do
    source attrs['binary_url']
    checksum attrs['binary_sha256']
    owner 'root'
    group 'root'
    mode '0755'
  end
else
  raise "flotilla: unknown install_method #{attrs['install_method'].inspect} (package or binary)"
end

if attrs['helper_image_archive_url']
  raise 'flotilla: helper_image_archive_url needs helper_image_archive_sha256' unless attrs['helper_image_archive_sha256']

  remote_file attrs['helper_image_archive'] do
    source attrs['helper_image_archive_url']
    checksum attrs['helper_image_archive_sha256']
    owner attrs['user']
    group attrs['group']
    mode '0600'
  end
end

cookbook_file attrs['upgrade_script'] do
  source 'runner_upgrade.sh'
  owner 'root'
  group 'root'
  mode '0755'
end
