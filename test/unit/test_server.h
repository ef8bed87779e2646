// A scripted HTTP/1.1 server for unit tests, on 127.0.0.1 with an ephemeral port and a
// thread per connection (keep-alive, Content-Length bodies only; libcurl sends no chunked
// bodies here). Handlers are chosen by the longest matching path prefix; every request is
// recorded with its arrival time, and the largest number of requests being answered at
// once is tracked, so tests can check concurrency and rate limits from the server's side.
//
// Header-only (inline), so any number of test files can include it in one binary.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace switchboard {
namespace test_support {

struct ServerRequest {
	std::string method;
	std::string path;                           // with the query string
	std::map<std::string, std::string> headers; // lower-cased names
	std::string body;
	std::chrono::steady_clock::time_point at; // when the request was completely read
};

struct ServerReply {
	int status = 200;
	std::string body;
	std::vector<std::pair<std::string, std::string>> headers;
	int delay_ms = 0;  // answer after this long (cut short when the server stops)
	bool drop = false; // close the connection without answering
	// When set: these bytes go out exactly as they are (status, headers, body above ignored),
	// then the connection closes (an answer without Content-Length, a broken one).
	std::string raw;
};

class ScriptedServer {
public:
	using Handler = std::function<ServerReply(const ServerRequest &)>;

	ScriptedServer()
	{
		listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
		if (listen_fd_ < 0)
			throw std::runtime_error("socket failed");
		int one = 1;
		setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		sockaddr_in addr{};
		addr.sin_family = AF_INET;
		addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		addr.sin_port = 0; // ephemeral: tests may run in parallel
		if (bind(listen_fd_, reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) != 0 || listen(listen_fd_, 512) != 0) {
			close(listen_fd_);
			throw std::runtime_error("bind/listen on 127.0.0.1 failed");
		}
		socklen_t len = sizeof(addr);
		getsockname(listen_fd_, reinterpret_cast<sockaddr *>(&addr), &len);
		port_ = ntohs(addr.sin_port);
		acceptor_ = std::thread([this] { AcceptLoop(); });
	}

	~ScriptedServer()
	{
		stop_ = true;
		acceptor_.join();
		close(listen_fd_);
		std::vector<std::thread> connections;
		{
			std::lock_guard<std::mutex> lock(mu_);
			connections.swap(connections_);
		}
		for (auto &t : connections)
			t.join();
	}

	ScriptedServer(const ScriptedServer &) = delete;
	ScriptedServer &operator=(const ScriptedServer &) = delete;

	// Requests whose path starts with prefix are answered by handler (longest prefix wins);
	// others get 404. Handlers run on connection threads, possibly at the same time.
	void On(const std::string &prefix, Handler handler)
	{
		std::lock_guard<std::mutex> lock(mu_);
		handlers_[prefix] = std::move(handler);
	}

	std::string Url(const std::string &path) const { return "http://127.0.0.1:" + std::to_string(port_) + path; }
	int port() const { return port_; }
	// Connections accepted so far (connection reuse shows as fewer than requests).
	int accepted() const { return accepted_.load(); }

	std::vector<ServerRequest> Requests()
	{
		std::lock_guard<std::mutex> lock(mu_);
		return received_;
	}

	std::vector<ServerRequest> RequestsTo(const std::string &prefix)
	{
		std::vector<ServerRequest> out;
		for (auto &request : Requests())
			if (request.path.compare(0, prefix.size(), prefix) == 0)
				out.push_back(std::move(request));
		return out;
	}

	size_t RequestCount()
	{
		std::lock_guard<std::mutex> lock(mu_);
		return received_.size();
	}

	// Most requests that were being answered (read, reply not yet sent) at one moment.
	int MaxConcurrent() const { return max_active_.load(); }

private:
	static std::string Lower(std::string s)
	{
		for (char &c : s)
			c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
		return s;
	}

	void AcceptLoop()
	{
		while (!stop_) {
			pollfd pfd{listen_fd_, POLLIN, 0};
			if (poll(&pfd, 1, 20) <= 0)
				continue;
			int fd = accept(listen_fd_, nullptr, nullptr);
			if (fd < 0)
				continue;
			accepted_++;
			std::lock_guard<std::mutex> lock(mu_);
			connections_.emplace_back([this, fd] { Serve(fd); });
		}
	}

	// Reads until buffer holds at least want bytes; false on close, error or stop.
	bool ReadAtLeast(int fd, std::string &buffer, size_t want)
	{
		char chunk[16384];
		while (buffer.size() < want) {
			if (stop_)
				return false;
			pollfd pfd{fd, POLLIN, 0};
			if (poll(&pfd, 1, 20) <= 0)
				continue;
			ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
			if (n <= 0)
				return false;
			buffer.append(chunk, static_cast<size_t>(n));
		}
		return true;
	}

	static void SendAll(int fd, const std::string &data)
	{
		size_t sent = 0;
		while (sent < data.size()) {
			ssize_t n = send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
			if (n <= 0)
				return;
			sent += static_cast<size_t>(n);
		}
	}

	// Parses one request from buffer (reading more as needed); false when the peer is gone.
	bool ReadRequest(int fd, std::string &buffer, ServerRequest *request)
	{
		size_t header_end;
		while ((header_end = buffer.find("\r\n\r\n")) == std::string::npos)
			if (!ReadAtLeast(fd, buffer, buffer.size() + 1))
				return false;
		std::string head = buffer.substr(0, header_end);
		buffer.erase(0, header_end + 4);
		size_t line_end = head.find("\r\n");
		std::string request_line = head.substr(0, line_end);
		size_t sp1 = request_line.find(' ');
		size_t sp2 = request_line.find(' ', sp1 + 1);
		request->method = request_line.substr(0, sp1);
		request->path = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
		size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
		while (pos < head.size()) {
			size_t next = head.find("\r\n", pos);
			if (next == std::string::npos)
				next = head.size();
			std::string line = head.substr(pos, next - pos);
			size_t colon = line.find(':');
			if (colon != std::string::npos) {
				std::string value = line.substr(colon + 1);
				value.erase(0, value.find_first_not_of(' '));
				request->headers[Lower(line.substr(0, colon))] = value;
			}
			pos = next + 2;
		}
		size_t length = 0;
		auto it = request->headers.find("content-length");
		if (it != request->headers.end())
			length = std::stoul(it->second);
		if (!ReadAtLeast(fd, buffer, length))
			return false;
		request->body = buffer.substr(0, length);
		buffer.erase(0, length);
		request->at = std::chrono::steady_clock::now();
		return true;
	}

	ServerReply Dispatch(const ServerRequest &request)
	{
		Handler handler;
		{
			std::lock_guard<std::mutex> lock(mu_);
			size_t best = 0;
			for (const auto &entry : handlers_) {
				if (request.path.compare(0, entry.first.size(), entry.first) == 0 && entry.first.size() >= best) {
					best = entry.first.size();
					handler = entry.second;
				}
			}
		}
		if (!handler) {
			ServerReply reply;
			reply.status = 404;
			reply.body = "no handler for " + request.path;
			return reply;
		}
		return handler(request);
	}

	void Serve(int fd)
	{
		std::string buffer;
		while (!stop_) {
			ServerRequest request;
			if (!ReadRequest(fd, buffer, &request))
				break;
			int active = ++active_;
			for (int seen = max_active_.load(); active > seen && !max_active_.compare_exchange_weak(seen, active);)
				;
			{
				std::lock_guard<std::mutex> lock(mu_);
				received_.push_back(request);
			}
			ServerReply reply = Dispatch(request);
			auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(reply.delay_ms);
			while (!stop_ && std::chrono::steady_clock::now() < until)
				std::this_thread::sleep_for(std::chrono::milliseconds(2));
			if (reply.drop) {
				--active_;
				break;
			}
			if (!reply.raw.empty()) {
				--active_;
				SendAll(fd, reply.raw);
				break;
			}
			std::string text = "HTTP/1.1 " + std::to_string(reply.status) +
			                   " Scripted\r\nContent-Length: " + std::to_string(reply.body.size()) + "\r\n";
			for (const auto &header : reply.headers)
				text += header.first + ": " + header.second + "\r\n";
			text += "\r\n" + reply.body;
			// Counted as done before the bytes leave: the client may submit its next request
			// the moment it reads this answer.
			--active_;
			SendAll(fd, text);
		}
		close(fd);
	}

	int listen_fd_ = -1;
	int port_ = 0;
	std::atomic<bool> stop_{false};
	std::atomic<int> active_{0};
	std::atomic<int> max_active_{0};
	std::atomic<int> accepted_{0};
	std::thread acceptor_;
	std::mutex mu_;
	std::vector<std::thread> connections_;
	std::map<std::string, Handler> handlers_;
	std::vector<ServerRequest> received_;
};

} // namespace test_support
} // namespace switchboard
