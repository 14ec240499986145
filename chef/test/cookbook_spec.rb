# The flotilla cookbook, evaluated by the harness (harness.rb) without converging.
# Run: rspec chef/test (FLOTILLA_BIN names the flotilla binary for `config check`; default
# target/debug/flotilla).

require_relative 'harness'
require 'tomlrb'
require 'open3'
require 'securerandom'
require 'tmpdir'

FLOTILLA_BIN = ENV.fetch('FLOTILLA_BIN', File.join(Harness::REPO, 'target/debug/flotilla'))
ROLES = %w[flotilla-shared flotilla-private].freeze
# A fake token made at run time: `prefix` then 20 random letters and digits (the tree holds no
# token-looking literal).
def fake_token(prefix = 'glrt-')
  "#{prefix}#{SecureRandom.alphanumeric(20)}"
end

SECRET = fake_token.freeze
REG_SECRET = fake_token('GR1348941').freeze

def converge(role: nil, tokens: nil, &overrides)
  run = Harness::Run.new(role: role, &overrides)
  run.node.run_state['flotilla_tokens'] = tokens || { 'flotilla' => SECRET }
  run.converge('default')
end

def role_tokens(role)
  Harness::Role.load(File.join(Harness::COOKBOOK, "roles/#{role}.rb"))
              .override_attributes['flotilla']['runners'].to_h { |r| [r['name'], SECRET] }
end

def config_check(text)
  Dir.mktmpdir do |dir|
    path = File.join(dir, 'config.toml')
    File.write(path, text)
    out, status = Open3.capture2e(FLOTILLA_BIN, 'config', 'check', path)
    [status.success?, out]
  end
end

# TOML's meaning compared with the attributes': times as strings, keys as strings.
def normalize(value)
  case value
  when Hash then value.reject { |_, v| v.nil? }.to_h { |k, v| [k.to_s, normalize(v)] }
  when Array then value.map { |v| normalize(v) }
  when Time then value.utc.strftime('%Y-%m-%dT%H:%M:%SZ')
  else value
  end
end

RSpec.describe 'flotilla cookbook' do
  describe 'ruby -c' do
    Dir[File.join(Harness::COOKBOOK, '**/*.rb')].sort.each do |file|
      it "#{file.delete_prefix("#{Harness::REPO}/")} is valid Ruby" do
        out, status = Open3.capture2e('ruby', '-c', file)
        expect(status).to be_success, out
      end
    end
  end

  it 'ships runner_upgrade.sh byte-identical to scripts/runner_upgrade.sh' do
    shipped = File.binread(File.join(Harness::COOKBOOK, 'files/runner_upgrade.sh'))
    expect(shipped).to eq(File.binread(File.join(Harness::REPO, 'scripts/runner_upgrade.sh')))
  end

  it 'default includes install, config and service, not upgrade' do
    run = converge
    expect(run.included_recipes).to eq(%w[flotilla::default flotilla::install flotilla::config flotilla::service])
  end

  describe 'config.toml' do
    [nil, *ROLES].each do |role|
      context "with #{role ? "role #{role}" : 'the default attributes'}" do
        let(:run) { converge(role: role, tokens: role ? role_tokens(role) : nil) }
        let(:text) { run.render(run.find('template[/etc/flotilla/config.toml]')) }

        it 'passes flotilla config check' do
          ok, out = config_check(text)
          expect(ok).to be(true), out
        end

        it 'means what the attributes say, value by value' do
          parsed = Tomlrb.parse(text)
          node = run.node['flotilla']
          expected = normalize(node['config'])
          node['runners'].each_with_index do |attrs, i|
            runner = parsed['runners'][i]
            want = normalize(attrs).merge('token' => SECRET)
            want['docker'] = { 'helper_image' => node['helper_image'] }.merge(want['docker'] || {})
            expect(runner).to eq(want)
          end
          expect(parsed.reject { |k, _| k == 'runners' }).to eq(expected)
          expect(Array(parsed['runners']).length).to eq(node['runners'].length)
        end

        it 'renders identical bytes twice' do
          again = run.render(run.find('template[/etc/flotilla/config.toml]'))
          expect(again).to eq(text)
          fresh = converge(role: role, tokens: role ? role_tokens(role) : nil)
          expect(fresh.render(fresh.find('template[/etc/flotilla/config.toml]'))).to eq(text)
        end
      end
    end

    it 'follows the roles: shared is one job per VM, unprivileged, with periods; private reuses VMs, privileged' do
      shared = Tomlrb.parse(converge(role: 'flotilla-shared', tokens: role_tokens('flotilla-shared')).then { |r| r.render(r.find('template[/etc/flotilla/config.toml]')) })
      runner = shared['runners'].first
      expect(runner['executor']).to eq('docker+machine')
      expect(runner['machine']['MaxBuilds']).to eq(1)
      expect(runner['docker']['privileged']).to be(false)
      expect(runner['machine']['autoscaling'].map { |p| p['Periods'] }).to eq([['* * 8-18 * * mon-fri *'], ['* * * * * sat,sun *']])
      expect(runner['gce']['zones']).to eq(%w[us-east1-c us-east1-d us-east1-b])

      private_runner = Tomlrb.parse(converge(role: 'flotilla-private', tokens: role_tokens('flotilla-private')).then { |r| r.render(r.find('template[/etc/flotilla/config.toml]')) })['runners'].first
      expect(private_runner['machine']['MaxBuilds']).to be > 1
      expect(private_runner['docker']['privileged']).to be(true)
    end

    it 'follows Erubis trimming: statement lines leave no blank lines or indentation behind' do
      run = converge do
        override['flotilla']['config'] = { 'concurrent' => 2, 'log_level' => 'debug', 'listen_address' => nil,
                                           'check_interval' => nil, 'shutdown_timeout' => nil, 'log_format' => nil,
                                           'state_dir' => nil }
        override['flotilla']['runners'] = [{ 'name' => 'a', 'url' => 'https://g.example/', 'token' => 'glrt-x',
                                             'executor' => 'docker', 'docker' => { 'image' => 'alpine' } }]
      end
      text = run.render(run.find('template[/etc/flotilla/config.toml]'))
      body = text.lines.reject { |l| l.start_with?('#') }.join
      expect(body).to eq(<<~TOML)
        concurrent = 2
        log_level = "debug"

        [[runners]]
          name = "a"
          url = "https://g.example/"
          token = "glrt-x"
          executor = "docker"
          [runners.docker]
            helper_image = "flotilla-helper:0.1.0"
            image = "alpine"
      TOML
    end

    it 'keeps TOML types and escapes strings at any depth' do
      run = converge do
        override['flotilla']['runners'] = [{
          'name' => "quote \" back \\ tab \t nl \n", 'url' => 'https://g.example/', 'token' => 'glrt-x',
          'executor' => 'docker', 'limit' => 3, 'output_limit' => 8192,
          'docker' => { 'cpus' => '1.5', 'privileged' => true, 'volumes' => [] },
          'machine' => { 'IdleScaleFactor' => 0.5, 'autoscaling' => [{ 'Periods' => ['* * * * * * *'], 'IdleCount' => 0 }] },
          'gce' => { 'labels' => { 'a-b' => 'c', 'with space' => 'd' } }
        }]
      end
      parsed = Tomlrb.parse(run.render(run.find('template[/etc/flotilla/config.toml]')))
      r = parsed['runners'].first
      expect(r['name']).to eq("quote \" back \\ tab \t nl \n")
      expect(r['limit']).to eq(3)
      expect(r['docker']['cpus']).to eq('1.5')
      expect(r['docker']['privileged']).to be(true)
      expect(r['docker']['volumes']).to eq([])
      expect(r['machine']['IdleScaleFactor']).to eq(0.5)
      expect(r['machine']['autoscaling']).to eq([{ 'Periods' => ['* * * * * * *'], 'IdleCount' => 0 }])
      expect(r['gce']['labels']).to eq('a-b' => 'c', 'with space' => 'd')
    end

    it 'is mode 0600, owned by the unit user, sensitive, verified by config check, and notifies no restart' do
      run = converge
      t = run.find('template[/etc/flotilla/config.toml]')
      expect(t[:mode]).to eq('0600')
      expect(t[:owner]).to eq(run.node['flotilla']['user'])
      unit = run.render(run.find('template[/etc/systemd/system/flotilla.service]'))
      expect(unit).to include("User=#{t[:owner]}\n")
      expect(unit).to match(%r{^ReadWritePaths=.* /etc/flotilla$})
      expect(t[:sensitive]).to be(true)
      expect(t[:verify]).to eq('/usr/bin/flotilla config check %{path}')
      chain = run.notification_chain(t)
      expect(chain).not_to be_empty # the SIGHUP reload
      chain.each { |_target, action| expect(action).not_to eq(:restart) }
      expect(chain.map { |target, action| [target.id, action] }).to eq([['service[flotilla]', :reload]])
    end
  end

  describe 'token rotation and registration' do
    let(:dir) { Dir.mktmpdir }
    after { FileUtils.remove_entry(dir) }

    def run_with(disk_text, runner_attrs, registered: nil)
      config_path = File.join(dir, 'config.toml')
      File.write(config_path, disk_text) if disk_text
      reg_dir = File.join(dir, 'registered')
      FileUtils.mkdir_p(reg_dir)
      File.write(File.join(reg_dir, 'r1.toml'), registered) if registered
      run = converge do
        override['flotilla']['config_path'] = config_path
        override['flotilla']['registered_dir'] = reg_dir
        override['flotilla']['runners'] = [runner_attrs]
      end
      Tomlrb.parse(run.render(run.find("template[#{config_path}]")))['runners'].first
    end

    let(:base) { { 'name' => 'r1', 'url' => 'https://g.example/', 'id' => 7, 'executor' => 'docker' } }
    let(:rotated_token) { fake_token }
    let(:original_token) { fake_token }
    let(:rotated) do
      <<~TOML
        [[runners]]
          name = "r1"
          id = 7
          token = "#{rotated_token}"
          token_obtained_at = 2026-12-01T10:00:00Z
          token_expires_at = 2027-01-01T10:00:00Z
      TOML
    end

    it 'keeps the token the manager rotated on disk when the runner id matches' do
      r = run_with(rotated, base.merge('token' => original_token, 'token_obtained_at' => '2026-11-01T00:00:00Z'))
      expect(r['token']).to eq(rotated_token)
      expect(normalize(r)['token_obtained_at']).to eq('2026-12-01T10:00:00Z')
      expect(normalize(r)['token_expires_at']).to eq('2027-01-01T10:00:00Z')
    end

    it 'takes the attributes token when the disk runner has another id' do
      r = run_with(rotated.sub('id = 7', 'id = 8'), base.merge('token' => original_token))
      expect(r['token']).to eq(original_token)
    end

    it 'takes a newer token from the attributes (replaced in the vault)' do
      new_token = fake_token
      r = run_with(rotated, base.merge('token' => new_token, 'token_obtained_at' => Time.utc(2026, 12, 5)))
      expect(r['token']).to eq(new_token)
    end

    it 'takes the token and id flotilla register wrote when the attributes have none' do
      registered_token = fake_token
      reg = "[[runners]]\n  name = \"r1\"\n  id = 99\n  token = \"#{registered_token}\"\n"
      r = run_with(nil, base.reject { |k, _| k == 'id' }, registered: reg)
      expect(r['token']).to eq(registered_token)
      expect(r['id']).to eq(99)
    end
  end

  describe 'the unit and the service' do
    let(:run) { converge }
    let(:unit) { run.render(run.find('template[/etc/systemd/system/flotilla.service]')) }

    it 'renders from the same content as scripts/flotilla.service' do
      expect(unit).to eq(File.read(File.join(Harness::REPO, 'scripts/flotilla.service')))
    end

    it 'takes ExecStart and ReadWritePaths from config_path and state_dir' do
      run = converge do
        override['flotilla']['config_path'] = '/srv/flotilla/etc/config.toml'
        override['flotilla']['config']['state_dir'] = '/srv/flotilla/state'
      end
      unit = run.render(run.find('template[/etc/systemd/system/flotilla.service]'))
      expect(unit).to include("ExecStart=/usr/bin/flotilla run --config /srv/flotilla/etc/config.toml\n")
      expect(unit).to include("ReadWritePaths=/srv/flotilla/state /srv/flotilla/etc\n")
      expect(run.find('directory[/srv/flotilla/state]')[:mode]).to eq('0700')
    end

    it 'stops with SIGQUIT and waits at least two hours' do
      expect(unit).to include("KillSignal=SIGQUIT\n")
      timeout = unit[/^TimeoutStopSec=(\d+)$/, 1]
      expect(timeout.to_i).to be >= 7200
    end

    it 'is enabled and started, and nothing restarts it' do
      service = run.find('service[flotilla]')
      expect(service.effective_actions).to include(:enable, :start)
      run.resources.each do |r|
        run.notification_chain(r).each do |target, action|
          expect([target.id, action]).not_to eq(['service[flotilla]', :restart]), "#{r.id} restarts the manager"
        end
      end
    end

    it 'pins the package version and the package notifies nothing' do
      pkg = run.find('package[flotilla]')
      expect(pkg[:version]).to eq('0.1.0-1')
      expect(run.notification_chain(pkg)).to be_empty
    end

    it 'pins the binary by checksum with install_method binary, and it notifies nothing' do
      run = converge do
        override['flotilla']['install_method'] = 'binary'
        override['flotilla']['binary_url'] = 'https://releases.example.com/flotilla-0.1.0'
        override['flotilla']['binary_sha256'] = 'ab' * 32
      end
      bin = run.find('remote_file[/usr/bin/flotilla]')
      expect(bin[:checksum]).to eq('ab' * 32)
      expect(run.notification_chain(bin)).to be_empty
    end

    it 'downloads the helper image archive by checksum and points docker runners at it' do
      run = converge do
        override['flotilla']['helper_image_archive_url'] = 'https://releases.example.com/flotilla-helper-0.1.0.tar'
        override['flotilla']['helper_image_archive_sha256'] = 'cd' * 32
      end
      archive = '/var/lib/flotilla/flotilla-helper-0.1.0.tar'
      f = run.find("remote_file[#{archive}]")
      expect([f[:checksum], f[:mode], f[:owner]]).to eq(['cd' * 32, '0600', 'flotilla'])
      text = run.render(run.find('template[/etc/flotilla/config.toml]'))
      expect(Tomlrb.parse(text)['runners'].first['docker']['helper_image_archive']).to eq(archive)
      ok, out = config_check(text)
      expect(ok).to be(true), out
      expect(run.notification_chain(f)).to be_empty
    end

    it 'installs runner_upgrade.sh from files/ to /usr/local/sbin' do
      f = run.find('cookbook_file[/usr/local/sbin/runner_upgrade.sh]')
      expect([f[:source], f[:mode]]).to eq(['runner_upgrade.sh', '0755'])
    end

    it 'makes state_dir 0700, owned by the service user' do
      d = run.find('directory[/var/lib/flotilla]')
      expect([d[:mode], d[:owner]]).to eq(['0700', 'flotilla'])
    end
  end

  describe 'flotilla::upgrade' do
    let(:run) { Harness::Run.new.converge('upgrade') }
    let(:exe) { run.find('execute[flotilla drain and upgrade]') }

    it 'drives runner_upgrade.sh update only when the running binary was replaced' do
      expect(exe[:command]).to eq('/usr/local/sbin/runner_upgrade.sh update')
      expect(exe.guards.map { |g| g[:kind] }).to eq([:only_if])
      expect(exe.guards.first[:command]).to include('(deleted)')
    end

    it 'spares the current chef-client run: no nested chef-client, only the timer suspended' do
      env = exe[:environment]
      expect(env['FLOTILLA_CM_COMMAND']).not_to include('chef-client')
      expect(env['FLOTILLA_CM_COMMAND']).to eq('apt-get install -y flotilla=0.1.0-1')
      expect(env['FLOTILLA_CM_SUSPEND']).to include('systemctl stop chef-client.timer')
      expect(env['FLOTILLA_CM_SUSPEND']).not_to include('chef-client.service')
      expect(env['FLOTILLA_CM_RESUME']).to include('systemctl start chef-client.timer')
    end

    it 'is not part of the default recipe' do
      expect { converge.find('execute[flotilla drain and upgrade]') }.to raise_error(KeyError)
    end
  end

  describe 'flotilla_runner' do
    def declare(action)
      run = Harness::Run.new
      ctx = Harness::RecipeContext.new(run, 'test')
      r = ctx.flotilla_runner('shared-gce-1') do
        url 'https://gitlab.example.com/'
        registration_token REG_SECRET
        action action
      end
      [run, r]
    end

    it 'registers non-interactively with the token only in the environment, idempotently' do
      run, r = declare(:register)
      inner = run.step_into(r)
      exe = inner.find { |x| x.type == :execute }
      expect(exe[:command]).to eq('/usr/bin/flotilla register --non-interactive --config /etc/flotilla/registered/shared-gce-1.toml')
      expect(exe[:environment]).to include('REGISTRATION_TOKEN' => REG_SECRET, 'CI_SERVER_URL' => 'https://gitlab.example.com/',
                                           'RUNNER_NAME' => 'shared-gce-1', 'RUNNER_EXECUTOR' => 'docker+machine',
                                           'DOCKER_IMAGE' => 'alpine:latest', 'REGISTER_LOCKED' => 'true')
      expect(exe[:sensitive]).to be(true)
      expect(exe[:creates]).to eq('/etc/flotilla/registered/shared-gce-1.toml')
      file = inner.find { |x| x.type == :file }
      expect([file.name, file[:mode], file[:owner]]).to eq(['/etc/flotilla/registered/shared-gce-1.toml', '0400', 'root'])
    end

    it 'sends no server-side setting with an authentication token (register would refuse it)' do
      run = Harness::Run.new
      r = Harness::RecipeContext.new(run, 'test').flotilla_runner('private-1') do
        url 'https://gitlab.example.com/'
        token SECRET
        tag_list %w[gce]
      end
      exe = run.step_into(r).find { |x| x.type == :execute }
      expect(exe[:environment]).to include('CI_SERVER_TOKEN' => SECRET, 'DOCKER_IMAGE' => 'alpine:latest')
      expect(exe[:environment].keys).not_to include('REGISTRATION_TOKEN', 'RUNNER_TAG_LIST', 'REGISTER_RUN_UNTAGGED', 'REGISTER_LOCKED')
    end

    it 'unregisters by name, only when registered, and removes the file' do
      run, r = declare(:unregister)
      inner = run.step_into(r)
      exe = inner.find { |x| x.type == :execute }
      expect(exe[:command]).to eq('/usr/bin/flotilla unregister --config /etc/flotilla/registered/shared-gce-1.toml --name shared-gce-1')
      expect(exe.guards.first[:kind]).to eq(:only_if)
      expect(exe.guards.first[:block].call).to be(false) # nothing registered on this machine
      expect(inner.find { |x| x.type == :file }.effective_actions).to eq([:delete])
    end

    it 'refuses to register without a token' do
      run = Harness::Run.new
      r = Harness::RecipeContext.new(run, 'test').flotilla_runner('x') { url 'https://g.example/' }
      expect { run.step_into(r, :register) }.to raise_error(RuntimeError, /registration_token or token is required/)
    end
  end

  describe 'no token leaks' do
    # Every string a resource shows: its name, its command, its properties (not the environment
    # of a sensitive execute, nor a property declared sensitive, which chef-client prints as
    # "*sensitive value suppressed*"), and the logs.
    def visible_strings(run, resources)
      resources.flat_map do |r|
        secret_props = run.custom_resources[r.type]&.properties&.select { |_, o| o[:sensitive] }&.keys || []
        props = r.properties.reject { |k, _| (k == :environment && r[:sensitive]) || secret_props.include?(k) }
        [r.name, *props.values.select { |v| v.is_a?(String) || v.is_a?(Array) }.flatten.map(&:to_s)]
      end + run.logs
    end

    it 'in no log, resource name, command or world-readable file' do
      ROLES.each do |role|
        run = converge(role: role, tokens: role_tokens(role))
        ctx = Harness::RecipeContext.new(run, 'test')
        reg = ctx.flotilla_runner('r') do
          url 'https://g.example/'
          registration_token REG_SECRET
        end
        inner = run.step_into(reg)
        visible_strings(run, run.resources + inner).each do |s|
          expect(s).not_to include(SECRET)
          expect(s).not_to include(REG_SECRET)
        end
        # The rendered files holding a token are readable by their owner alone.
        run.find_all(:template).each do |t|
          text = run.render(t)
          next unless text.include?(SECRET)

          expect(t[:mode]).to eq('0600')
          expect(t[:sensitive]).to be(true)
        end
        expect(run.render(run.find('template[/etc/flotilla/config.toml]'))).to include(SECRET)
        (run.find_all(:file) + run.find_all(:cookbook_file) + run.find_all(:directory) + inner.select { |x| x.type == :file })
          .each { |f| expect(f[:mode].to_i(8) & 0o004).to eq(0), "#{f.id} is world-readable" if f.properties.key?(:mode) && f.name.include?('registered') }
      end
    end
  end
end
