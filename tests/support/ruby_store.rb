# frozen_string_literal: true

# The FeatureHub Ruby SDK's MemcacheSessionStore write and refresh protocol, on the real
# Dalli gem, as a long-lived process the Python tests drive (tests/support/ruby.py).
#
# Protocol (as the Ruby store does it):
# * client: Dalli::Client.new(servers, serializer: JSON), default compression (zlib for
#   values of 4 KiB or more, flags bit 0x2); the data key gets `features.to_json`, which the
#   JSON serializer encodes again: a JSON string holding the JSON array, flags 1;
# * fingerprint: SHA-256 hex of "id:version" joined by "|" in the array's own order;
# * merge: a newer version replaces the entry in place, a new feature is appended;
# * write: up to `retries` attempts of: read, compute the new array (stop if nothing is
#   newer, or its fingerprint equals the internal one), get(_sha) and compare it with the
#   internal fingerprint (different: sleep the backoff and retry), compare-and-set _sha
#   (add when absent), then a plain set of the data key;
# * the internal fingerprint is set by a successful write, at start, and by the refresh
#   timer (the `refresh` command, or --refresh-seconds): get(_sha); if it differs, read
#   the data (the real store replays it) and adopt the new fingerprint.
#
# One JSON command per line on stdin, one JSON answer per line on stdout:
#   {"cmd":"update","feature":{...}}   process_update
#   {"cmd":"updates","features":[...]} process_updates
#   {"cmd":"delete","id":"..."}        delete_feature
#   {"cmd":"refresh"}                  one timer tick
#   {"cmd":"read"}                     the array the store reads
#   {"cmd":"quit"}
# Every answer carries "ok"; writes add "result" (written, unchanged, exhausted) and
# "attempts". Logs go to stderr; stdout carries answers only.
#
# Two test-only options change no byte the store writes: --set-delay-ms pauses between the
# compare-and-set of _sha and the set of the data key (a Ruby thread descheduled there by
# GC or the GVL: a schedule the protocol allows), and --observe-overwrites reads the data
# key's CAS token before that set, so a written answer says whether the set overwrote
# someone else's write ("overwrote").

require "digest"
require "json"
require "logger"
require "optparse"
require "dalli"

$stdout.sync = true
LOG = Logger.new($stderr)
Dalli.logger = LOG
LOG.level = Logger::WARN

options = { servers: "127.0.0.1:11211", key: nil, retries: 10, backoff_ms: 500.0,
            refresh_seconds: 0.0, load: true, set_delay_ms: 0.0, observe: false }
OptionParser.new do |o|
  o.on("--servers LIST", "host:port[,host:port]") { |v| options[:servers] = v }
  o.on("--key KEY", "data key ({prefix}_{environment id}); the fingerprint key adds _sha") do |v|
    options[:key] = v
  end
  o.on("--retries N", Integer, "write attempts (the store's retry_update_count, 10)") do |v|
    options[:retries] = v
  end
  o.on("--backoff-ms MS", Float, "sleep after a lost attempt (backoff_timeout, 500)") do |v|
    options[:backoff_ms] = v
  end
  o.on("--refresh-seconds S", Float, "refresh timer period; 0: only the refresh command") do |v|
    options[:refresh_seconds] = v
  end
  o.on("--[no-]load", "read the fingerprint at start, as the store's constructor does") do |v|
    options[:load] = v
  end
  o.on("--set-delay-ms MS", Float, "pause between claiming _sha and setting the data") do |v|
    options[:set_delay_ms] = v
  end
  o.on("--observe-overwrites", "report whether a data set overwrote another write") do
    options[:observe] = true
  end
end.parse!
abort("--key is required") unless options[:key]

# The store's state and protocol; one instance per process, like one Ruby app process.
class RubyMemcacheStore
  attr_reader :internal_sha

  def initialize(options)
    @dalli = Dalli::Client.new(options[:servers], serializer: JSON)
    @features_key = options[:key]
    @sha_key = "#{options[:key]}_sha"
    @retries = options[:retries]
    @backoff = options[:backoff_ms] / 1000.0
    @set_delay = options[:set_delay_ms] / 1000.0
    @observe = options[:observe]
    @internal_sha = nil
    @mutex = Mutex.new
    load_from_memcache if options[:load]
  end

  def process_update(feature)
    perform_store_with_retry do |stored|
      existing = stored.find { |f| f["id"] == feature["id"] }
      next nil if existing && version_of(existing) >= version_of(feature)

      merge(stored, [feature])
    end
  end

  def process_updates(features)
    return { "ok" => true, "result" => "unchanged", "attempts" => 0 } \
      if sha_of(features) == @dalli.get(@sha_key)

    perform_store_with_retry do |stored|
      newer = features.any? do |f|
        existing = stored.find { |s| s["id"] == f["id"] }
        existing.nil? || version_of(f) > version_of(existing)
      end
      newer ? merge(stored, features) : nil
    end
  end

  def delete_feature(fid)
    perform_store_with_retry do |stored|
      kept = stored.reject { |f| f["id"] == fid }
      kept.length < stored.length ? kept : nil
    end
  end

  # One tick of the refresh timer.
  def refresh
    current = @dalli.get(@sha_key)
    known = @mutex.synchronize { @internal_sha }
    return { "ok" => true, "changed" => false } if current == known

    features = read_features
    @mutex.synchronize { @internal_sha = current }
    { "ok" => true, "changed" => true, "features" => features.length }
  end

  def read_features
    parse(@dalli.get(@features_key))
  end

  private

  def load_from_memcache
    sha = @dalli.get(@sha_key)
    @mutex.synchronize { @internal_sha = sha }
    read_features
  end

  def parse(json)
    return [] unless json

    JSON.parse(json)
  rescue JSON::ParserError
    []
  end

  # The data as read at the start of an attempt, and its CAS token when observing.
  def read_for_write
    return [read_features, nil] unless @observe

    json, token = @dalli.get_cas(@features_key)
    [parse(json), token]
  end

  def perform_store_with_retry
    attempt = 0
    while attempt < @retries
      stored, token = read_for_write
      updated = yield(stored)
      return done("unchanged", attempt) if updated.nil?

      new_sha = sha_of(updated)
      known = @mutex.synchronize { @internal_sha }
      return done("unchanged", attempt) if new_sha == known

      current = @dalli.get(@sha_key)
      if current == known && claim_sha(current, new_sha, known)
        sleep(@set_delay) if @set_delay.positive?
        overwrote = @observe && @dalli.get_cas(@features_key)[1] != token
        @dalli.set(@features_key, updated.to_json)
        @mutex.synchronize { @internal_sha = new_sha }
        return done("written", attempt).merge(@observe ? { "overwrote" => overwrote } : {})
      end

      # someone else wrote since our internal fingerprint was taken, or won the race
      sleep(@backoff) unless attempt == @retries - 1
      attempt += 1
    end
    LOG.warn("[featurehubsdk] failed to update memcache after #{@retries} retries")
    { "ok" => false, "result" => "exhausted", "attempts" => attempt }
  end

  def done(result, attempt)
    { "ok" => true, "result" => result, "attempts" => attempt + 1 }
  end

  # Compare-and-set of the fingerprint key: add when absent, else cas on what we believe.
  def claim_sha(current, new_sha, known)
    return !!@dalli.add(@sha_key, new_sha) if current.nil?

    claimed = false
    @dalli.cas(@sha_key) do |value|
      claimed = (value == known)
      claimed ? new_sha : value
    end
    claimed
  end

  def sha_of(features)
    Digest::SHA256.hexdigest(features.map { |f| "#{f["id"]}:#{version_of(f)}" }.join("|"))
  end

  def version_of(feature)
    (feature["version"] || 0).to_i
  end

  def merge(base, updates)
    result = base.dup
    updates.each do |update|
      idx = result.index { |f| f["id"] == update["id"] }
      if idx.nil?
        result << update
      elsif version_of(update) > version_of(result[idx])
        result[idx] = update
      end
    end
    result
  end
end

store = RubyMemcacheStore.new(options)
if options[:refresh_seconds].positive?
  Thread.new do
    loop do
      sleep(options[:refresh_seconds])
      begin
        store.refresh
      rescue StandardError => e
        LOG.warn("[featurehubsdk] refresh failed: #{e.class}: #{e.message}")
      end
    end
  end
end

puts JSON.generate({ "ok" => true, "ready" => true, "ruby" => RUBY_VERSION,
                     "dalli" => Dalli::VERSION, "internal_sha" => store.internal_sha })

$stdin.each_line do |line|
  started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  answer = begin
    request = JSON.parse(line)
    case request["cmd"]
    when "update" then store.process_update(request.fetch("feature"))
    when "updates" then store.process_updates(request.fetch("features"))
    when "delete" then store.delete_feature(request.fetch("id"))
    when "refresh" then store.refresh
    when "read" then { "ok" => true, "features" => store.read_features }
    when "quit" then break
    else { "ok" => false, "error" => "unknown command #{request["cmd"].inspect}" }
    end
  rescue StandardError => e
    { "ok" => false, "error" => "#{e.class}: #{e.message}" }
  end
  answer["internal_sha"] = store.internal_sha
  answer["ms"] = ((Process.clock_gettime(Process::CLOCK_MONOTONIC) - started) * 1000).round(1)
  puts JSON.generate(answer)
end
