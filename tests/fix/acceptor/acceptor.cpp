// A small FIX 4.4 broker built on QuickFIX, used by the FIX Account Manager tests.
//
// QuickFIX owns the session (logon, sequence numbers, resends, validation against the
// FIX44.xml data dictionary); this file only decides what happens to orders.
//
// Usage:
//   fix-acceptor --port N --dict FIX44.xml --store DIR [--sender BROKER] [--target CLIENT]
//                [--password PW] [--lot N] [--reset-on-logon]
//
// Rules (documented in docs/brokers/fix.md):
//   * every symbol trades at a reference price (default 100, "price SYM PX" moves it);
//     a symbol starting with "BAD" is unknown and rejected; a quantity above 1000 is
//     rejected with Text "quantity N exceeds limit 1000"; a limit price outside half to
//     twice the reference price is refused ("price P outside band"), also on replace;
//   * market orders are acknowledged, then filled in lots of at most --lot (default 10)
//     at the reference price plus 0.25 per lot (minus for sells);
//   * a limit order fills at its limit when the reference price reaches it, a stop order
//     at the reference price when it is touched; otherwise both rest until "price" moves
//     the market or "fill CLORDID QTY [PX]" fills them by hand;
//   * RequestForPositions is not offered: QuickFIX answers it with a BusinessMessageReject.
//
// Commands on stdin (one per line): price SYM PX | fill CLORDID QTY [PX] | repeat CLORDID | disconnect |
// logout | testrequest ID | quit. Events on stdout (one per line, flushed): READY,
// LOGON, LOGOUT, HEARTBEAT_REPLY ID, APP <MsgType> for each application message,
// DONE <verb> when a command has been carried out, ERROR <what> when it could not be.

#include <quickfix/Application.h>
#include <quickfix/FileLog.h>
#include <quickfix/FileStore.h>
#include <quickfix/Session.h>
#include <quickfix/SessionSettings.h>
#include <quickfix/SocketAcceptor.h>
#include <quickfix/fix44/ExecutionReport.h>
#include <quickfix/fix44/MarketDataIncrementalRefresh.h>
#include <quickfix/fix44/MarketDataRequest.h>
#include <quickfix/fix44/MarketDataRequestReject.h>
#include <quickfix/fix44/MarketDataSnapshotFullRefresh.h>
#include <quickfix/fix44/OrderCancelReject.h>
#include <quickfix/fix44/TestRequest.h>

#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

namespace {

const double kMaxQty = 1000;

struct Order {
  std::string cl_ord_id, order_id, symbol, account;
  char side = '1', ord_type = '1';
  double qty = 0, price = 0, stop_px = 0, cum = 0, notional = 0;
  char status = '0';
  bool done() const { return status == '2' || status == '4' || status == '8'; }
  double leaves() const { return done() ? 0 : qty - cum; }
  double avg() const { return cum > 0 ? notional / cum : 0; }
};

void say(const std::string& line) {
  static std::mutex out_mutex;
  std::lock_guard<std::mutex> lock(out_mutex);
  std::cout << line << std::endl;
}

class Broker : public FIX::Application {
 public:
  explicit Broker(int lot) : lot_(lot) {}

  void onCreate(const FIX::SessionID& id) override { session_ = id; }
  void onLogon(const FIX::SessionID&) override { say("LOGON"); }
  void onLogout(const FIX::SessionID& id) override {
    // "logout" disables the session; enable it again so the client may log back on.
    FIX::Session* session = FIX::Session::lookupSession(id);
    if (session != nullptr && !session->isEnabled()) session->logon();
    say("LOGOUT");
  }
  void toAdmin(FIX::Message&, const FIX::SessionID&) override {}
  void toApp(FIX::Message&, const FIX::SessionID&) throw(FIX::DoNotSend) override {}

  void fromAdmin(const FIX::Message& msg, const FIX::SessionID&)
      throw(FIX::FieldNotFound, FIX::IncorrectDataFormat, FIX::IncorrectTagValue,
            FIX::RejectLogon) override {
    const std::string type = msg.getHeader().getField(FIX::FIELD::MsgType);
    if (type == "A" && !password_.empty()) {
      if (!msg.isSetField(554) || msg.getField(554) != password_)
        throw FIX::RejectLogon("invalid username or password");
    }
    if (type == "0" && msg.isSetField(FIX::FIELD::TestReqID))
      say("HEARTBEAT_REPLY " + msg.getField(FIX::FIELD::TestReqID));
  }

  void fromApp(const FIX::Message& msg, const FIX::SessionID&)
      throw(FIX::FieldNotFound, FIX::IncorrectDataFormat, FIX::IncorrectTagValue,
            FIX::UnsupportedMessageType) override {
    const std::string type = msg.getHeader().getField(FIX::FIELD::MsgType);
    say("APP " + type);
    std::vector<FIX::Message> out;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (type == "D") new_order(msg, out);
      else if (type == "F") cancel(msg, out);
      else if (type == "G") replace(msg, out);
      else if (type == "H") status(msg, out);
      else if (type == "V") market_data(msg, out);
      else throw FIX::UnsupportedMessageType();
    }
    send(out);
  }

  // ---- commands from stdin (main thread)
  void command(const std::string& line) {
    std::istringstream in(line);
    std::string verb;
    in >> verb;
    std::vector<FIX::Message> out;
    FIX::Session* session = FIX::Session::lookupSession(session_);
    if (verb == "price") {
      std::string symbol;
      double px = 0;
      in >> symbol >> px;
      std::lock_guard<std::mutex> lock(mutex_);
      prices_[symbol] = px;
      for (auto& entry : orders_) sweep(entry.second, out);
      if (subscribed_.count(symbol)) tick(symbol, px, out);
    } else if (verb == "fill") {
      std::string id;
      double qty = 0, px = 0;
      in >> id >> qty;
      std::lock_guard<std::mutex> lock(mutex_);
      Order* order = find(id);
      if (order == nullptr || order->done()) {
        say("ERROR no working order " + id);
      } else {
        if (!(in >> px)) px = order->ord_type == '2' ? order->price : ref(order->symbol);
        execute(*order, std::min(qty, order->leaves()), px, out);
      }
    } else if (verb == "repeat") {
      // The newest fill of an order sent again with the same ExecID (a broker's duplicate).
      std::string id;
      in >> id;
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = last_fill_.find(id);
      if (it == last_fill_.end()) say("ERROR no fill of " + id);
      else out.push_back(it->second);
    } else if (verb == "disconnect" && session) {
      session->disconnect();
    } else if (verb == "logout" && session) {
      session->logout("logout requested by the broker");
    } else if (verb == "testrequest") {
      std::string id;
      in >> id;
      FIX44::TestRequest request{FIX::TestReqID(id)};
      out.push_back(request);
    }
    send(out);
    say("DONE " + verb);
  }

  void set_password(const std::string& pw) { password_ = pw; }

 private:
  void send(std::vector<FIX::Message>& out) {
    for (auto& msg : out) {
      try {
        FIX::Session::sendToTarget(msg, session_);
      } catch (FIX::SessionNotFound&) {
      }
    }
  }

  double ref(const std::string& symbol) {
    auto it = prices_.find(symbol);
    return it == prices_.end() ? 100.0 : it->second;
  }

  // A limit price more than half the reference price away is refused (a price collar).
  bool in_band(const std::string& symbol, double px) {
    const double r = ref(symbol);
    return px >= r / 2 && px <= r * 2;
  }

  Order* find(const std::string& cl_ord_id) {
    auto it = by_cl_ord_id_.find(cl_ord_id);
    return it == by_cl_ord_id_.end() ? nullptr : &orders_[it->second];
  }

  FIX44::ExecutionReport report(const Order& o, char exec_type, const std::string& text = "") {
    FIX44::ExecutionReport er(FIX::OrderID(o.order_id), FIX::ExecID("E" + std::to_string(++exec_id_)),
                              FIX::ExecType(exec_type), FIX::OrdStatus(o.status), FIX::Side(o.side),
                              FIX::LeavesQty(o.leaves()), FIX::CumQty(o.cum), FIX::AvgPx(o.avg()));
    er.set(FIX::ClOrdID(o.cl_ord_id));
    er.set(FIX::Symbol(o.symbol));
    er.set(FIX::OrderQty(o.qty));
    er.set(FIX::OrdType(o.ord_type));
    if (o.ord_type == '2') er.set(FIX::Price(o.price));
    if (o.ord_type == '3') er.set(FIX::StopPx(o.stop_px));
    if (!o.account.empty()) er.set(FIX::Account(o.account));
    if (!text.empty()) er.set(FIX::Text(text));
    er.set(FIX::TransactTime());
    return er;
  }

  void execute(Order& o, double qty, double px, std::vector<FIX::Message>& out) {
    if (qty <= 0) return;
    o.cum += qty;
    o.notional += qty * px;
    o.status = o.cum >= o.qty - 1e-9 ? '2' : '1';
    FIX44::ExecutionReport er = report(o, 'F');
    er.set(FIX::LastQty(qty));
    er.set(FIX::LastPx(px));
    last_fill_[o.cl_ord_id] = er;
    out.push_back(er);
  }

  // Fill a resting limit or stop order if the reference price allows it.
  void sweep(Order& o, std::vector<FIX::Message>& out) {
    if (o.done() || o.ord_type == '1') return;
    const double px = ref(o.symbol);
    const bool buy = o.side == '1';
    if (o.ord_type == '2' && (buy ? px <= o.price : px >= o.price)) {
      execute(o, o.leaves(), o.price, out);
    } else if (o.ord_type == '3' && (buy ? px >= o.stop_px : px <= o.stop_px)) {
      execute(o, o.leaves(), px, out);
    }
  }

  void new_order(const FIX::Message& msg, std::vector<FIX::Message>& out) {
    Order o;
    o.cl_ord_id = msg.getField(FIX::FIELD::ClOrdID);
    o.symbol = msg.getField(FIX::FIELD::Symbol);
    o.side = msg.getField(FIX::FIELD::Side)[0];
    o.ord_type = msg.getField(FIX::FIELD::OrdType)[0];
    o.qty = std::stod(msg.getField(FIX::FIELD::OrderQty));
    if (msg.isSetField(FIX::FIELD::Price)) o.price = std::stod(msg.getField(FIX::FIELD::Price));
    if (msg.isSetField(FIX::FIELD::StopPx)) o.stop_px = std::stod(msg.getField(FIX::FIELD::StopPx));
    if (msg.isSetField(FIX::FIELD::Account)) o.account = msg.getField(FIX::FIELD::Account);
    o.order_id = "O" + std::to_string(orders_.size() + 1);
    std::string why;
    if (by_cl_ord_id_.count(o.cl_ord_id)) why = "duplicate ClOrdID " + o.cl_ord_id;
    else if (o.symbol.rfind("BAD", 0) == 0) why = "unknown symbol " + o.symbol;
    else if (o.qty > kMaxQty) why = "quantity " + msg.getField(FIX::FIELD::OrderQty) + " exceeds limit 1000";
    else if (o.ord_type == '2' && o.price <= 0) why = "limit order without price";
    else if (o.ord_type == '2' && !in_band(o.symbol, o.price)) why = "price " + msg.getField(FIX::FIELD::Price) + " outside band";
    else if (o.ord_type == '3' && o.stop_px <= 0) why = "stop order without StopPx";
    else if (o.ord_type != '1' && o.ord_type != '2' && o.ord_type != '3') why = "unsupported OrdType";
    if (!why.empty()) {
      o.status = '8';
      FIX44::ExecutionReport er = report(o, '8', why);
      er.set(FIX::OrdRejReason(why.rfind("unknown symbol", 0) == 0 ? 1 : 99));
      out.push_back(er);
      if (!by_cl_ord_id_.count(o.cl_ord_id)) store(o);
      return;
    }
    Order& stored = store(o);
    out.push_back(report(stored, '0'));
    if (stored.ord_type == '1') {
      const double base = ref(stored.symbol);
      const double step = stored.side == '1' ? 0.25 : -0.25;
      for (int i = 0; stored.leaves() > 0; ++i)
        execute(stored, std::min<double>(lot_, stored.leaves()), base + step * i, out);
    } else {
      sweep(stored, out);
    }
  }

  Order& store(const Order& o) {
    orders_[o.order_id] = o;
    by_cl_ord_id_[o.cl_ord_id] = o.order_id;
    return orders_[o.order_id];
  }

  void cancel_reject(const FIX::Message& msg, const Order* o, char response_to, const std::string& text,
                     std::vector<FIX::Message>& out) {
    FIX44::OrderCancelReject rej(FIX::OrderID(o ? o->order_id : "NONE"),
                                 FIX::ClOrdID(msg.getField(FIX::FIELD::ClOrdID)),
                                 FIX::OrigClOrdID(msg.getField(FIX::FIELD::OrigClOrdID)),
                                 FIX::OrdStatus(o ? o->status : '8'), FIX::CxlRejResponseTo(response_to));
    rej.set(FIX::CxlRejReason(o ? 0 : 1));
    rej.set(FIX::Text(text));
    out.push_back(rej);
  }

  void cancel(const FIX::Message& msg, std::vector<FIX::Message>& out) {
    const std::string orig = msg.getField(FIX::FIELD::OrigClOrdID);
    Order* o = find(orig);
    if (o == nullptr || o->done()) {
      cancel_reject(msg, o, '1', o ? "order " + orig + " is already done" : "unknown order " + orig, out);
      return;
    }
    o->status = '4';
    o->cl_ord_id = msg.getField(FIX::FIELD::ClOrdID);
    by_cl_ord_id_[o->cl_ord_id] = o->order_id;
    FIX44::ExecutionReport er = report(*o, '4');
    er.set(FIX::OrigClOrdID(orig));
    out.push_back(er);
  }

  void replace(const FIX::Message& msg, std::vector<FIX::Message>& out) {
    const std::string orig = msg.getField(FIX::FIELD::OrigClOrdID);
    Order* o = find(orig);
    if (o == nullptr || o->done()) {
      cancel_reject(msg, o, '2', o ? "order " + orig + " is already done" : "unknown order " + orig, out);
      return;
    }
    const double qty = std::stod(msg.getField(FIX::FIELD::OrderQty));
    if (qty < o->cum || qty > kMaxQty) {
      cancel_reject(msg, o, '2', "quantity " + msg.getField(FIX::FIELD::OrderQty) + " not allowed", out);
      return;
    }
    if (msg.isSetField(FIX::FIELD::Price) && !in_band(o->symbol, std::stod(msg.getField(FIX::FIELD::Price)))) {
      cancel_reject(msg, o, '2', "price " + msg.getField(FIX::FIELD::Price) + " outside band", out);
      return;
    }
    o->qty = qty;
    if (msg.isSetField(FIX::FIELD::Price)) o->price = std::stod(msg.getField(FIX::FIELD::Price));
    if (msg.isSetField(FIX::FIELD::StopPx)) o->stop_px = std::stod(msg.getField(FIX::FIELD::StopPx));
    o->cl_ord_id = msg.getField(FIX::FIELD::ClOrdID);
    by_cl_ord_id_[o->cl_ord_id] = o->order_id;
    if (o->cum >= o->qty - 1e-9) o->status = '2';
    FIX44::ExecutionReport er = report(*o, '5');
    er.set(FIX::OrigClOrdID(orig));
    out.push_back(er);
    sweep(*o, out);
  }

  void status(const FIX::Message& msg, std::vector<FIX::Message>& out) {
    const std::string id = msg.getField(FIX::FIELD::ClOrdID);
    Order* o = find(id);
    if (o != nullptr) {
      FIX44::ExecutionReport er = report(*o, 'I');
      out.push_back(er);
      return;
    }
    Order unknown;
    unknown.cl_ord_id = id;
    unknown.order_id = "NONE";
    unknown.symbol = msg.getField(FIX::FIELD::Symbol);
    unknown.side = msg.getField(FIX::FIELD::Side)[0];
    unknown.status = '8';
    FIX44::ExecutionReport er = report(unknown, 'I', "unknown order " + id);
    er.set(FIX::OrdRejReason(5));
    out.push_back(er);
  }

  void market_data(const FIX::Message& msg, std::vector<FIX::Message>& out) {
    FIX44::MarketDataRequest req(msg);
    const std::string req_id = msg.getField(FIX::FIELD::MDReqID);
    const char kind = msg.getField(FIX::FIELD::SubscriptionRequestType)[0];
    FIX44::MarketDataRequest::NoRelatedSym related;
    req.getGroup(1, related);
    const std::string symbol = related.getField(FIX::FIELD::Symbol);
    if (symbol.rfind("BAD", 0) == 0) {
      FIX44::MarketDataRequestReject rej{FIX::MDReqID(req_id)};
      rej.set(FIX::MDReqRejReason('0'));
      rej.set(FIX::Text("unknown symbol " + symbol));
      out.push_back(rej);
      return;
    }
    if (kind == '2') {
      subscribed_.erase(symbol);
      return;
    }
    if (kind == '1') subscribed_[symbol] = req_id;
    const double px = ref(symbol);
    FIX44::MarketDataSnapshotFullRefresh snap;
    snap.set(FIX::MDReqID(req_id));
    snap.set(FIX::Symbol(symbol));
    const char types[] = {'0', '1', '2'};
    const double offsets[] = {-0.25, 0.25, 0};
    for (int i = 0; i < 3; ++i) {
      FIX44::MarketDataSnapshotFullRefresh::NoMDEntries entry;
      entry.set(FIX::MDEntryType(types[i]));
      entry.set(FIX::MDEntryPx(px + offsets[i]));
      entry.set(FIX::MDEntrySize(1));
      snap.addGroup(entry);
    }
    out.push_back(snap);
  }

  void tick(const std::string& symbol, double px, std::vector<FIX::Message>& out) {
    FIX44::MarketDataIncrementalRefresh inc;
    inc.set(FIX::MDReqID(subscribed_[symbol]));
    FIX44::MarketDataIncrementalRefresh::NoMDEntries entry;
    entry.set(FIX::MDUpdateAction('0'));
    entry.set(FIX::MDEntryType('2'));
    entry.set(FIX::Symbol(symbol));
    entry.set(FIX::MDEntryPx(px));
    entry.set(FIX::MDEntrySize(1));
    inc.addGroup(entry);
    out.push_back(inc);
  }

  int lot_;
  std::string password_;
  FIX::SessionID session_;
  std::mutex mutex_;
  std::map<std::string, Order> orders_;
  std::map<std::string, std::string> by_cl_ord_id_;
  std::map<std::string, double> prices_;
  std::map<std::string, std::string> subscribed_;
  long exec_id_ = 0;
  std::map<std::string, FIX::Message> last_fill_;  // ClOrdID -> its newest fill report
};

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> args = {{"--sender", "BROKER"}, {"--target", "CLIENT"},
                                             {"--lot", "10"}, {"--password", ""},
                                             {"--reset-on-logon", "N"}};
  for (int i = 1; i < argc; ++i) {
    std::string key = argv[i];
    if (key == "--reset-on-logon") args[key] = "Y";
    else if (i + 1 < argc) args[key] = argv[++i];
  }
  for (const char* need : {"--port", "--dict", "--store"}) {
    if (!args.count(need)) {
      std::cerr << "fix-acceptor: missing " << need << std::endl;
      return 2;
    }
  }
  // The FileStore lives in --store: an acceptor restarted on the same folder keeps its
  // sequence numbers.
  std::ostringstream cfg;
  cfg << "[DEFAULT]\nConnectionType=acceptor\nSocketAcceptHost=127.0.0.1\n"
      << "SocketAcceptPort=" << args["--port"] << "\nFileStorePath=" << args["--store"]
      << "\nFileLogPath=" << args["--store"] << "/log\nStartTime=00:00:00\nEndTime=00:00:00\n"
      << "UseDataDictionary=Y\nDataDictionary=" << args["--dict"]
      << "\nValidateUserDefinedFields=Y\nResetOnLogon=" << args["--reset-on-logon"]
      << "\nSocketReuseAddress=Y\n\n[SESSION]\nBeginString=FIX.4.4\nSenderCompID=" << args["--sender"]
      << "\nTargetCompID=" << args["--target"] << "\n";
  try {
    std::istringstream cfg_in(cfg.str());
    FIX::SessionSettings settings(cfg_in);
    Broker broker(std::stoi(args["--lot"]));
    broker.set_password(args["--password"]);
    FIX::FileStoreFactory store(settings);
    FIX::FileLogFactory log(settings);
    FIX::SocketAcceptor acceptor(broker, store, settings, log);
    acceptor.start();
    say("READY");
    std::string line;
    while (std::getline(std::cin, line)) {
      if (line == "quit") break;
      if (!line.empty()) broker.command(line);
    }
    acceptor.stop();
  } catch (std::exception& e) {
    std::cerr << "fix-acceptor: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
